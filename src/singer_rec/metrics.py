"""Top-K ranking metrics at item level: HR@K and NDCG@K with one relevant item per row.

The one implementation used by `evaluate`, the baselines and the report.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_KS = (3, 5, 10)


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
    r = np.array([np.inf if x is None else x for x in ranks], dtype=float)
    out: dict[str, float] = {}
    for k in ks:
        hit = r <= k
        out[f"HR@{k}"] = float(hit.mean())
        out[f"NDCG@{k}"] = float(np.where(hit, 1.0 / np.log2(np.where(hit, r, 1.0) + 1.0), 0.0).mean())
    out["n"] = n
    return out


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

