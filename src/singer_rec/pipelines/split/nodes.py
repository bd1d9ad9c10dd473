"""split node: interactions -> train/valid/test sequence rows and their statistics."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from singer_rec.data import split
from singer_rec.data.sources import SEQUENCE_COLUMNS
from singer_rec.params import from_params, rule

logger = logging.getLogger(__name__)


@dataclass
class TimeWindow:
    """``split.time_window``: keep ``start <= time < end``; ISO date (UTC) or unix seconds; null = open."""

    start: str | int | None = None
    end: str | int | None = None


@dataclass
class SplitParams:
    """``params:split``."""

    k_core: int = field(default=5, metadata=rule(ge=1))
    time_window: TimeWindow = field(default_factory=TimeWindow)
    max_history: int = field(default=10, metadata=rule(ge=1))
    protocol: str = field(default="chronological", metadata=rule(choices=split.PROTOCOLS))
    ratios: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])

    def check(self, where: str) -> None:
        if len(self.ratios) != 3 or any(r < 0 for r in self.ratios) or abs(sum(self.ratios) - 1) > 1e-6:
            raise ValueError(f"{where}.ratios must be three non-negative shares of train, valid, test "
                             f"summing to 1, got {self.ratios}")


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
    config = from_params(SplitParams, params, "split")
    if given_sequences is not None and len(given_sequences) > 0:
        train, valid, test = _given_splits(given_sequences)
        for name, table in (("train", train), ("valid", valid), ("test", test)):
            _check_known_items(items, table, ["history", "target"], f"given {name} sequences")
        stats = split.split_statistics(
            train, valid, test, interactions=len(interactions), protocol="given"
        )
    else:
        _check_known_items(items, interactions, ["item_id"], "interactions")
        train, valid, test, n_kept = split.make_sequences(
            interactions,
            k=config.k_core,
            max_history=config.max_history,
            protocol=config.protocol,
            ratios=tuple(config.ratios),
            start=config.time_window.start,
            end=config.time_window.end,
        )
        stats = split.split_statistics(train, valid, test, interactions=n_kept, protocol=config.protocol)
    for name, table in (("train", train), ("valid", valid), ("test", test)):
        if table.empty:
            logger.warning("split: the %s split is empty (%s); the data is too small for it", name, stats)
    logger.info("split: %s", stats)
    return train, valid, test, stats
