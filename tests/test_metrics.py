import math

import numpy as np
import pytest

from singer_rec.metrics import hit_rank, metrics_from_ranks, ranking_metrics, ranks_from_scores


def test_hand_computed_hr_ndcg():
    ranked = [["a", "b", "c", "d", "e", "f"], ["x", "y", "z", "t", "u", "v"], ["p", "q", "r", "s", "w", "o"]]
    targets = ["c", "u", "nope"]  # ranks 3, 5, absent
    m = ranking_metrics(ranked, targets, ks=(3, 5))
    assert m["HR@3"] == pytest.approx(1 / 3)
    assert m["HR@5"] == pytest.approx(2 / 3)
    assert m["NDCG@3"] == pytest.approx((1 / math.log2(4)) / 3)
    assert m["NDCG@5"] == pytest.approx((1 / math.log2(4) + 1 / math.log2(6)) / 3)
    assert m["n"] == 3


def test_rank_one_gives_ndcg_one():
    assert metrics_from_ranks([1, 1]) == {"HR@3": 1.0, "NDCG@3": 1.0, "HR@5": 1.0, "NDCG@5": 1.0, "HR@10": 1.0, "NDCG@10": 1.0, "n": 2}


def test_hit_rank_and_errors():
    assert hit_rank(["a", "b"], "b") == 2
    assert hit_rank(["a", "b"], "c") is None
    with pytest.raises(ValueError, match="2 ranked lists but 1 targets"):
        ranking_metrics([["a"], ["b"]], ["a"])
    with pytest.raises(ValueError, match="zero rows"):
        metrics_from_ranks([])


def test_full_ranking_ranks_ties_pessimistic():
    scores = np.array([[0.1, 0.9, 0.5], [0.3, 0.3, 0.2]])
    assert ranks_from_scores(scores, np.array([2, 0])).tolist() == [2, 2]


def test_per_row_gain_means_are_the_metrics_and_bad_names_fail():
    from singer_rec.metrics import per_row_gain

    ranks = [1, 3, None, 12]
    assert per_row_gain(ranks, "HR@10").tolist() == [1.0, 1.0, 0.0, 0.0]
    assert per_row_gain(ranks, "NDCG@10").tolist() == [1.0, 0.5, 0.0, 0.0]
    assert per_row_gain(ranks, "NDCG@10").mean() == metrics_from_ranks(ranks)["NDCG@10"]
    with pytest.raises(ValueError, match="HR@K or NDCG@K"):
        per_row_gain(ranks, "MRR")


def test_paired_bootstrap_difference_and_interval():
    from singer_rec.metrics import paired_bootstrap

    same = paired_bootstrap([1, 2, None], [1, 2, None])
    assert same == {"mean": 0.0, "ci95_low": 0.0, "ci95_high": 0.0, "rows_up": 0, "rows_down": 0, "n": 3}
    # B moves two of four rows from a miss to rank 1: +0.5 NDCG@10; every resample's mean lies in [0, 1]
    out = paired_bootstrap([None, None, 3, 1], [1, 1, 3, 1], "NDCG@10", resamples=500, seed=1)
    assert out["mean"] == 0.5 and out["rows_up"] == 2 and out["rows_down"] == 0
    assert 0.0 <= out["ci95_low"] < 0.5 < out["ci95_high"] <= 1.0
    assert out == paired_bootstrap([None, None, 3, 1], [1, 1, 3, 1], "NDCG@10", resamples=500, seed=1)
    with pytest.raises(ValueError, match="paired rows needed"):
        paired_bootstrap([1], [1, 2])
