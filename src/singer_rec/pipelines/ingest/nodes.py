"""ingest node: one source's raw data -> the ``items`` and ``interactions`` tables."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from singer_rec.data import sources

logger = logging.getLogger(__name__)


def ingest(
    raw_root: str, seed: int, params: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Read the source named by ``params['source']`` into ``(items, interactions,
    given_sequences)``.

    ``raw_root`` (relative paths: from the directory `kedro run` is started in) holds the raw
    files of the real sources; ``synthetic`` ignores it and generates the demo from ``seed``
    and ``params['synthetic']``. ``given_sequences`` holds the splits a source ships
    (``minionerec``) and is empty otherwise. Any bad input raises before anything is returned,
    so Kedro saves no partial output.
    """
    source = params.get("source")
    skip_bad_lines = bool(params.get("skip_bad_lines", False))
    dataset = params.get("dataset") or ""
    if source not in sources.SOURCES:
        raise ValueError(f"parameter ingest.source must be one of {sources.SOURCES}, got {source!r}")
    if source != "synthetic" and not dataset:
        raise ValueError(f"parameter ingest.dataset is required for source {source!r}")
    root = Path(raw_root)
    given = sources.empty_given_sequences()
    if source == "synthetic":
        items, interactions = sources.read_synthetic(
            int(seed), skip_bad_lines=skip_bad_lines, **(params.get("synthetic") or {})
        )
    elif source == "minionerec":
        items, interactions, given = sources.read_minionerec(root, dataset)
    else:
        items, interactions = sources.read_amazon_dump(
            root, dataset, version=source, skip_bad_lines=skip_bad_lines,
            reviews_file=params.get("reviews_file"), meta_file=params.get("meta_file"),
        )
    logger.info(
        "ingest %s %s: %d items, %d interactions, %d users, %d given sequence rows",
        source, dataset, len(items), len(interactions), interactions["user_id"].nunique(), len(given),
    )
    return items, interactions, given
