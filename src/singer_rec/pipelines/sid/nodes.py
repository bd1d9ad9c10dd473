"""Thin node around ``singer_rec.sid.rq_kmeans``: codes, collision suffixes, SID strings, report."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from singer_rec.sid.rq_kmeans import RQResult, balanced_rq_kmeans, balanced_sizes, dedupe_suffixes
from singer_rec.params import from_params, rule
from singer_rec.sid.tokens import format_sid

logger = logging.getLogger(__name__)


@dataclass
class SidParams:
    """``params:sid``: balanced RQ-KMeans (the seed is the project-wide ``seed``)."""

    num_levels: int = field(default=3, metadata=rule(ge=1))
    codebook_size: int | None = field(default=256, metadata=rule(ge=2))   # K <= number of items; null = auto
    max_iter: int = field(default=100, metadata=rule(ge=1))
    tol: float = field(default=1e-7, metadata=rule(ge=0))
    init_trials: int | None = field(default=None, metadata=rule(ge=1))


AUTO_MAX_CODEBOOK = 256        # the paper's K
AUTO_ITEMS_PER_CODE = 16       # the hand-set codebooks put 13-19 items in a first-level cluster


def auto_codebook_size(n_items: int, num_levels: int) -> tuple[int, str]:
    """K for ``sid.codebook_size: null``, and the reason, in words, for the report.

    K = min(256, n, max(r, n // 16)), r = the smallest K with K ** num_levels >= n: about 16
    items per first-level code (the set codebooks: demo 240/16, Gift_Cards 148/8, Industrial
    3686/256), never fewer codes than L levels need to give n items n distinct code paths, never
    more than the paper's 256 or than the items (balanced k-means needs K <= n).
    """
    if n_items < 2:
        raise ValueError(f"sid: {n_items} item(s); at least 2 are needed for a codebook")
    root = 1
    while root ** num_levels < n_items:
        root += 1
    per_code = n_items // AUTO_ITEMS_PER_CODE
    k = max(2, min(AUTO_MAX_CODEBOOK, n_items, max(root, per_code)))
    reason = (f"auto: K = min({AUTO_MAX_CODEBOOK}, n, max(r, n // {AUTO_ITEMS_PER_CODE})) with n = {n_items} items, "
              f"r = {root} (the smallest K with K^{num_levels} >= n), n // {AUTO_ITEMS_PER_CODE} = {per_code}")
    return k, reason


def check_inputs(items: pd.DataFrame, item_embeddings: np.ndarray) -> None:
    """Embeddings must be one finite float row per item, item ids unique."""
    if "item_id" not in items.columns:
        raise ValueError(f"sid: items has no 'item_id' column (columns: {list(items.columns)})")
    duplicated = items["item_id"][items["item_id"].duplicated()]
    if not duplicated.empty:
        raise ValueError(f"sid: items.item_id is not unique, e.g. {duplicated.iloc[0]!r} (row {duplicated.index[0]})")
    if item_embeddings.ndim != 2:
        raise ValueError(f"sid: item_embeddings must be [n_items, d], got shape {item_embeddings.shape}")
    if item_embeddings.shape[0] != len(items):
        raise ValueError(
            f"sid: item_embeddings has {item_embeddings.shape[0]} rows but items has {len(items)}; "
            "rerun the embed stage after changing items"
        )


def sid_table(item_ids: list[str], codes: np.ndarray, suffix: np.ndarray) -> pd.DataFrame:
    """``item_id, sid, codes``: the level codes, plus the suffix code for colliding items."""
    code_lists = [row + [int(s)] if s >= 0 else row for row, s in zip(codes.tolist(), suffix.tolist())]
    return pd.DataFrame(
        {"item_id": list(item_ids), "sid": [format_sid(c) for c in code_lists], "codes": code_lists}
    )


def sid_quality_report(result: RQResult, stats: dict[str, int], table: pd.DataFrame, seed: int) -> dict[str, Any]:
    """Figures of merit: collisions before/after the suffix, per-level use, sizes and error."""
    n, num_levels = result.codes.shape
    k = result.codebooks.shape[1]
    levels = {}
    for level, info in enumerate(result.levels):
        counts = np.bincount(result.codes[:, level], minlength=k)
        levels[f"level_{level}"] = {
            "codes_used": int((counts > 0).sum()),
            "utilisation": float((counts > 0).mean()),
            "cluster_size_min": int(counts.min()),
            "cluster_size_max": int(counts.max()),
            "quantization_error": result.quantization_error[level],
            "iterations": info.iterations,
            "converged": bool(info.converged),
        }
    lo, hi = balanced_sizes(n, k)
    return {
        "n_items": int(n),
        "num_levels": int(num_levels),
        "codebook_size": int(k),
        "seed": int(seed),
        "balanced_size_min": lo,
        "balanced_size_max": hi,
        "collisions_before": stats,
        "collisions_after": int(table["sid"].duplicated().sum()),
        "max_suffix": int(stats["largest_group"]),
        "distinct_sids": int(table["sid"].nunique()),
        "levels": levels,
    }


def build_semantic_ids(
    items: pd.DataFrame, item_embeddings: np.ndarray, params: dict[str, Any], seed: int
) -> tuple[pd.DataFrame, np.ndarray, dict[str, Any]]:
    """Balanced RQ-KMeans over the item embeddings -> (item_sids, sid_codebooks, sid_report)."""
    config = from_params(SidParams, params, "sid")
    check_inputs(items, item_embeddings)
    if config.codebook_size is None:
        codebook_size, reason = auto_codebook_size(len(items), config.num_levels)
        logger.info("sid.codebook_size: %d (%s)", codebook_size, reason)
    else:
        codebook_size, reason = config.codebook_size, "set: sid.codebook_size"
    if codebook_size > len(items):
        raise ValueError(f"sid.codebook_size ({codebook_size}) must be <= the number of items ({len(items)})")
    result = balanced_rq_kmeans(
        item_embeddings, config.num_levels, codebook_size, max_iter=config.max_iter, tol=config.tol,
        seed=int(seed), init_trials=config.init_trials, progress=True,
    )
    suffix, stats = dedupe_suffixes(result.codes)
    table = sid_table(items["item_id"].astype(str).tolist(), result.codes, suffix)
    report = sid_quality_report(result, stats, table, seed)
    report["codebook_size_rule"] = reason
    if report["collisions_after"]:
        raise RuntimeError(f"sid: {report['collisions_after']} SIDs still collide after the suffix (a bug)")
    logger.info(
        "item_sids: %d items, %d collision groups resolved with a suffix (largest %d)",
        len(table), stats["colliding_groups"], stats["largest_group"],
    )
    return table, result.codebooks, report
