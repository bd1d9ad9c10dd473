"""Top-K ranking metrics at item level: HR@K and NDCG@K with one relevant item per row.

The one implementation used by `evaluate`, the baselines and the report.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_KS = (3, 5, 10)
# every metric a stage reports, in the paper's column order (HR and NDCG side by side at each K)
METRIC_NAMES = tuple(f"{name}@{k}" for k in DEFAULT_KS for name in ("HR", "NDCG"))
# what a training stage may select its model on: the valid loss or a ranking metric
SELECTION_METRICS = ("loss", *METRIC_NAMES)


def hit_rank(ranked_items: Sequence, target) -> int | None:
    """1-based rank of ``target`` in ``ranked_items``, or None when it is absent."""
    for position, item in enumerate(ranked_items, start=1):
        if item == target:
            return position
    return None


def metrics_from_ranks(ranks: Sequence[int | None], ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """HR@K = share of rows whose target ranks ≤ K; NDCG@K = mean of 1/log2(rank+1) over those rows."""
    n = len(ranks)
    if n == 0:
        raise ValueError("cannot compute metrics on zero rows")
    r = _rank_array(ranks)
    out: dict[str, float] = {}
    for k in ks:
        out[f"HR@{k}"] = float(_gains(r, "HR", k).mean())
        out[f"NDCG@{k}"] = float(_gains(r, "NDCG", k).mean())
    out["n"] = n
    return out


def _rank_array(ranks: Sequence[int | None]) -> np.ndarray:
    return np.array([np.inf if x is None else x for x in ranks], dtype=float)


def _gains(r: np.ndarray, name: str, k: int) -> np.ndarray:
    """Per-row HR@k (hit) or NDCG@k (1/log2(rank+1) for a hit) of the rank array ``r``."""
    hit = r <= k
    if name == "HR":
        return hit.astype(float)
    return np.where(hit, 1.0 / np.log2(np.where(hit, r, 1.0) + 1.0), 0.0)


def ranking_metrics(ranked_lists: Sequence[Sequence], targets: Sequence, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """HR@K and NDCG@K of ranked lists against one target each."""
    if len(ranked_lists) != len(targets):
        raise ValueError(f"{len(ranked_lists)} ranked lists but {len(targets)} targets")
    return metrics_from_ranks([hit_rank(r, t) for r, t in zip(ranked_lists, targets)], ks)


def ranks_from_scores(scores: np.ndarray, target_index: np.ndarray) -> np.ndarray:
    """Full-ranking ranks (1-based) of each row's target among all items, ties broken pessimistically.

    ``scores`` is ``[rows, items]``; the rank counts items scoring ≥ the target's score.
    """
    scores = np.asarray(scores)
    target_scores = scores[np.arange(len(scores)), target_index]
    return (scores >= target_scores[:, None]).sum(axis=1)


def per_row_gain(ranks: Sequence[int | None], metric: str) -> np.ndarray:
    """Each row's contribution to ``metric`` (``HR@K`` or ``NDCG@K``): its mean is that metric."""
    name, _, k_text = metric.partition("@")
    if name not in ("HR", "NDCG") or not k_text.isdigit():
        raise ValueError(f"metric must be HR@K or NDCG@K, got {metric!r}")
    return _gains(_rank_array(ranks), name, int(k_text))


def paired_bootstrap(ranks_a: Sequence[int | None], ranks_b: Sequence[int | None], metric: str = "NDCG@10",
                     resamples: int = 2000, seed: int = 0) -> dict[str, float]:
    """``metric`` of B minus A on the same rows, with a 95% percentile interval over ``resamples``
    row resamples (the same rows for both, so row difficulty cancels) and the rows each way."""
    if len(ranks_a) != len(ranks_b) or len(ranks_a) == 0:
        raise ValueError(f"paired rows needed: got {len(ranks_a)} and {len(ranks_b)}")
    diff = per_row_gain(ranks_b, metric) - per_row_gain(ranks_a, metric)
    rng = np.random.default_rng(seed)
    means = np.array([diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(resamples)])
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": float(diff.mean()), "ci95_low": float(low), "ci95_high": float(high),
            "rows_up": int((diff > 0).sum()), "rows_down": int((diff < 0).sum()), "n": len(diff)}
