"""split node: interactions -> train/valid/test sequence rows and their statistics."""
from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from singer_rec.data import split
from singer_rec.data.sources import SEQUENCE_COLUMNS

logger = logging.getLogger(__name__)


def _check_known_items(items: pd.DataFrame, table: pd.DataFrame, columns: list[str], name: str) -> None:
    known = set(items["item_id"])
    for column in columns:
        values = table[column]
        if column == "history":
            unknown = next((v for cell in values for v in cell if v not in known), None)
        else:
            outside = values[~values.isin(known)]
            unknown = outside.iloc[0] if len(outside) else None
        if unknown is not None:
            raise ValueError(f"{name}: field '{column}' refers to item {unknown!r}, which is not in items")


def _given_splits(given: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    parts = []
    for name in ("train", "valid", "test"):
        part = given[given["split"] == name][SEQUENCE_COLUMNS].reset_index(drop=True)
        part["history"] = [list(history) for history in part["history"]]
        if part.empty:
            raise ValueError(f"given_sequences: split '{name}' has no rows")
        parts.append(part)
    return parts[0], parts[1], parts[2]


def split_sequences(
    items: pd.DataFrame, interactions: pd.DataFrame, given_sequences: pd.DataFrame, params: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    """``(train_sequences, valid_sequences, test_sequences, split_stats)``.

    When the source shipped its own splits (``given_sequences`` not empty: ``minionerec``) they
    pass through unchanged, row for row. Otherwise: time window -> ``params['k_core']``-core ->
    sliding-window rows (``max_history``) -> ``protocol`` (``chronological`` 8:1:1 by target
    time with ``ratios``, or ``leave_last_out``).
    """
    if given_sequences is not None and len(given_sequences) > 0:
        train, valid, test = _given_splits(given_sequences)
        for name, table in (("train", train), ("valid", valid), ("test", test)):
            _check_known_items(items, table, ["history", "target"], f"given {name} sequences")
        stats = split.split_statistics(
            train, valid, test, interactions=len(interactions), protocol="given"
        )
    else:
        _check_known_items(items, interactions, ["item_id"], "interactions")
        window = params.get("time_window") or {}
        protocol = params.get("protocol", "chronological")
        train, valid, test, n_kept = split.make_sequences(
            interactions,
            k=int(params.get("k_core", 5)),
            max_history=int(params.get("max_history", 10)),
            protocol=protocol,
            ratios=tuple(params.get("ratios", (0.8, 0.1, 0.1))),
            start=window.get("start"),
            end=window.get("end"),
        )
        stats = split.split_statistics(train, valid, test, interactions=n_kept, protocol=protocol)
    for name, table in (("train", train), ("valid", valid), ("test", test)):
        if table.empty:
            logger.warning("split: the %s split is empty (%s); the data is too small for it", name, stats)
    logger.info("split: %s", stats)
    return train, valid, test, stats
