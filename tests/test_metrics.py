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
