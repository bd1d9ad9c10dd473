"""Plain-module tests: encoding, the metric path, and each classic baseline learning a rule."""
import numpy as np
import pandas as pd
import pytest
import torch

from singer_rec.baselines.models import build_baseline_model
from singer_rec.baselines.sequences import ItemIndex, encode_sequences
from singer_rec.baselines.toy import rule_tables
from singer_rec.baselines.training import (
    TrainConfig,
    evaluate_markov,
    evaluate_model,
    evaluate_popularity,
    evaluate_scores,
    markov_transitions,
    popularity_scores,
    train_with_grid,
)
from singer_rec.metrics import ranking_metrics

MAX_LEN = 6
MODEL_CONFIG = {"dim": 32, "window": MAX_LEN, "max_len": MAX_LEN}


@pytest.fixture(scope="module")
def toy():
    item_ids, train, valid, test = rule_tables(num_items=40, num_users=300, max_len=MAX_LEN)
    index = ItemIndex(item_ids)
    return index, *(encode_sequences(t, index, MAX_LEN, name=n) for t, n in [(train, "train"), (valid, "valid"), (test, "test")])


def test_encoding_left_pads_and_truncates():
    index = ItemIndex(["a", "b", "c"])
    table = pd.DataFrame({"history": [["a"], ["a", "b", "c", "a"]], "target": ["b", "c"]})
    enc = encode_sequences(table, index, max_len=3)
    assert enc.histories.tolist() == [[0, 0, 1], [2, 3, 1]]
    assert enc.targets.tolist() == [2, 3]
    assert enc.full_sequences().tolist() == [[0, 0, 1, 2], [2, 3, 1, 3]]
    assert index.item_of(3) == "c"


def test_encoding_errors_name_table_row_and_field():
    index = ItemIndex(["a", "b"])
    with pytest.raises(ValueError, match=r"test row 1: field 'target': unknown item_id 'zz'"):
        encode_sequences(pd.DataFrame({"history": [["a"], ["b"]], "target": ["b", "zz"]}), index, 3, name="test")
    with pytest.raises(ValueError, match=r"valid row 0: field 'history' is empty"):
        encode_sequences(pd.DataFrame({"history": [[]], "target": ["b"]}), index, 3, name="valid")
    with pytest.raises(ValueError, match=r"t: missing column\(s\) \['target'\]"):
        encode_sequences(pd.DataFrame({"history": [["a"]]}), index, 3, name="t")
    with pytest.raises(ValueError, match="item_id 'a' more than once"):
        ItemIndex(["a", "b", "a"])


def test_full_ranking_path_equals_ranking_metrics_on_the_same_rankings():
    """The baselines' score -> rank -> metric path gives exactly metrics.ranking_metrics' numbers."""
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(200, 30))
    targets = rng.integers(0, 30, size=200)
    ranked_lists = np.argsort(-scores, axis=1)[:, :10].tolist()
    expected = ranking_metrics(ranked_lists, targets.tolist())
    assert evaluate_scores(scores, targets) == pytest.approx(expected, abs=0, rel=1e-12)
    assert expected["HR@10"] > 0  # the comparison is not vacuous


def test_evaluate_model_equals_ranking_metrics_of_its_top10(toy):
    index, train, valid, test = toy
    torch.manual_seed(0)
    model = build_baseline_model("sasrec", index.num_items, **MODEL_CONFIG).eval()
    with torch.no_grad():
        scores = model.score_all(test.histories).numpy()
    top10 = (np.argsort(-scores, axis=1)[:, :10] + 1).tolist()
    assert evaluate_model(model, test, batch_size=64) == pytest.approx(ranking_metrics(top10, test.targets.tolist()))


def test_popularity_counts_train_targets_and_breaks_ties_by_catalogue_order():
    index = ItemIndex(["a", "b", "c", "d"])
    train = encode_sequences(pd.DataFrame({"history": [["a"]] * 4, "target": ["c", "c", "b", "d"]}), index, 2)
    scores = popularity_scores(train, index.num_items)
    assert list(np.argsort(-scores)) == [2, 1, 3, 0]  # c (2), then b, d (1 each, b first), then a
    test = encode_sequences(pd.DataFrame({"history": [["a"], ["a"]], "target": ["c", "a"]}), index, 2)
    m = evaluate_popularity(scores, test, ks=(3,))
    assert m == {"HR@3": 0.5, "NDCG@3": 0.5, "n": 2}


def test_markov_ranks_by_transitions_from_the_last_item_then_by_popularity():
    index = ItemIndex(["a", "b", "c", "d"])
    train = encode_sequences(pd.DataFrame({"history": [["a"], ["c"], ["d", "a"], ["a"], ["b"]],
                                           "target": ["b", "b", "b", "d", "c"]}), index, 2)
    transitions = markov_transitions(train, index.num_items)
    # rows: item index (a=1 ... d=4), columns: item index - 1; a->b twice, a->d, c->b, b->c
    assert transitions.toarray().tolist() == [[0, 0, 0, 0], [0, 2, 0, 1], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
    popularity = popularity_scores(train, index.num_items)  # b (3), then c, d (1 each), then a
    test = encode_sequences(pd.DataFrame({"history": [["a"], ["b", "d"], ["c"], ["b"]],
                                          "target": ["d", "c", "b", "a"]}), index, 2)
    # a: b, d, then c, a by popularity -> d at 2; d has no successor: b, c, d, a -> c at 2;
    # c: b at 1; b: c, then b, d, a -> a at 4
    m = evaluate_markov(transitions, popularity, test, ks=(1, 3), batch_size=3)
    assert m == pytest.approx({"HR@1": 0.25, "NDCG@1": 0.25, "HR@3": 0.75,
                               "NDCG@3": (2 / np.log2(3) + 1) / 4, "n": 4}, abs=0, rel=1e-12)


@pytest.mark.parametrize("name", ["gru4rec", "caser", "sasrec", "hstu"])
def test_baseline_learns_the_rule_far_above_popularity(toy, name):
    index, train, valid, test = toy
    popularity = evaluate_popularity(popularity_scores(train, index.num_items), test)
    config = TrainConfig(batch_size=256, max_epochs=30, patience=3, learning_rates=[1e-2], weight_decays=[1e-6])
    fit = train_with_grid(name, index.num_items, train, valid, config, MODEL_CONFIG)
    metrics = evaluate_model(fit.model, test)
    assert popularity["HR@10"] < 0.35
    assert metrics["HR@10"] >= 0.95 and metrics["NDCG@10"] >= 0.85
    assert fit.grid[0]["learning_rate"] == 1e-2 and fit.best_epoch >= 1


def test_same_seed_same_model_and_ce_loss_learns(toy):
    index, train, valid, test = toy
    config = TrainConfig(loss="ce", batch_size=256, max_epochs=3, patience=5, learning_rates=[1e-2], weight_decays=[0.0])
    first = train_with_grid("gru4rec", index.num_items, train, valid, config, MODEL_CONFIG)
    second = train_with_grid("gru4rec", index.num_items, train, valid, config, MODEL_CONFIG)
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
    assert evaluate_model(first.model, test)["HR@10"] >= 0.9


def test_time_budget_stops_the_grid_after_the_first_point(toy):
    index, train, valid, _ = toy
    config = TrainConfig(batch_size=256, max_epochs=1, learning_rates=[1e-2, 1e-3], weight_decays=[1e-6], time_budget_s=0.0)
    fit = train_with_grid("caser", index.num_items, train, valid, config, MODEL_CONFIG)
    assert [g["learning_rate"] for g in fit.grid] == [1e-2]


def test_config_rejects_unknown_choices():
    with pytest.raises(ValueError, match=r"training\.loss must be one of \['bce', 'ce'\], got 'bpr'"):
        TrainConfig(loss="bpr")
    with pytest.raises(ValueError, match="unknown baseline model 'bert4rec'"):
        build_baseline_model("bert4rec", 5)


def test_prefix_windows_left_pad_every_prefix():
    from singer_rec.baselines.training import prefix_windows

    windows = prefix_windows(torch.tensor([[0, 5, 6, 7], [1, 2, 3, 4]]))
    assert windows[0].tolist() == [[0, 0, 0, 0], [0, 0, 0, 5], [0, 0, 5, 6], [0, 5, 6, 7]]
    assert windows[1].tolist() == [[0, 0, 0, 1], [0, 0, 1, 2], [0, 1, 2, 3], [1, 2, 3, 4]]


def test_hstu_is_causal_ignores_padding_and_uses_the_relative_bias():
    """A later item never changes an earlier state; padding slots give zero states; rab[h, i, j] = w[h, j - i + T - 1]."""
    from singer_rec.baselines.models import RelativePositionBias

    torch.manual_seed(0)
    model = build_baseline_model("hstu", 12, dim=16, num_heads=2, max_len=5, dropout=0.0).eval()
    sequence = torch.tensor([[0, 3, 4, 5, 6]])
    changed = sequence.clone()
    changed[0, 4] = 7
    with torch.no_grad():
        states, other = model.states(sequence), model.states(changed)
    assert torch.allclose(states[0, :4], other[0, :4]) and not torch.allclose(states[0, 4], other[0, 4])
    assert torch.equal(states[0, 0], model.final_norm(torch.zeros(16)))  # the padded slot carries nothing
    bias = RelativePositionBias(max_len=3, num_heads=1)
    with torch.no_grad():
        bias.weight.copy_(torch.tensor([[10.0, 20.0, 30.0, 40.0, 50.0]]))
    assert bias(3)[0].tolist() == [[30.0, 40.0, 50.0], [20.0, 30.0, 40.0], [10.0, 20.0, 30.0]]
    with pytest.raises(ValueError, match="exceeds HSTU max_len 3"):
        bias(4)
