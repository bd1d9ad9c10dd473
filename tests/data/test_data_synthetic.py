"""The synthetic demo: deterministic, Amazon-2018-shaped, with learnable structure."""
import pandas as pd

from singer_rec.data.sources import read_synthetic
from singer_rec.data.synthetic import generate_amazon_like


def test_same_seed_same_data_other_seed_other_data():
    first = generate_amazon_like(7, n_users=30, n_items=24, n_categories=3)
    assert first == generate_amazon_like(7, n_users=30, n_items=24, n_categories=3)
    assert first != generate_amazon_like(8, n_users=30, n_items=24, n_categories=3)


def test_records_are_shaped_like_amazon_2018():
    reviews, meta = generate_amazon_like(0, n_users=20, n_items=12, n_categories=2, n_untitled_items=1)
    assert {"reviewerID", "asin", "unixReviewTime", "overall", "reviewTime"} <= set(reviews[0])
    assert {"asin", "title", "description", "brand", "category"} <= set(meta[0])
    assert isinstance(meta[0]["description"], list) and isinstance(meta[0]["category"], list)
    assert len(meta) == 12 + 1
    # each user reviews on distinct days, so a user's order is unambiguous
    frame = pd.DataFrame(reviews)
    assert not frame.duplicated(["reviewerID", "unixReviewTime"]).any()
    assert (frame["unixReviewTime"] % 86400 == 0).all()


def test_demo_size_and_cleaning():
    items, interactions = read_synthetic(42)
    assert len(items) == 240  # the 2 untitled items are dropped with their reviews
    assert interactions["user_id"].nunique() == 400
    assert 3000 <= len(interactions) <= 4000
    assert not items["title"].str.contains("&|<").any()
    assert not items["description"].str.contains("&amp;|<p>").any()


def test_next_item_is_learnable_from_the_last_item():
    """Most transitions follow the category's product line, so predicting 'the most frequent
    successor of the last item' (fit on the first half of users) beats popularity by far."""
    items, interactions = read_synthetic(3)
    users = sorted(interactions["user_id"].unique())
    fit_users, eval_users = set(users[: len(users) // 2]), set(users[len(users) // 2 :])
    pairs = []
    for user, group in interactions.groupby("user_id"):
        sequence = group.sort_values("timestamp", kind="stable")["item_id"].tolist()
        pairs += [(user in fit_users, a, b) for a, b in zip(sequence, sequence[1:])]
    fit = pd.DataFrame([(a, b) for in_fit, a, b in pairs if in_fit], columns=["last", "next"])
    evaluation = [(a, b) for in_fit, a, b in pairs if not in_fit]
    successor = fit.groupby("last")["next"].agg(lambda s: s.value_counts().index[0]).to_dict()
    most_popular = fit["next"].value_counts().index[0]
    hit_successor = sum(successor.get(a) == b for a, b in evaluation) / len(evaluation)
    hit_popular = sum(most_popular == b for _, b in evaluation) / len(evaluation)
    assert hit_successor > 0.25 and hit_successor > 5 * hit_popular
