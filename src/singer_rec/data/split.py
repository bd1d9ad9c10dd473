"""From interactions to train/valid/test sequence rows (the paper's Appendix B protocol).

1. optional time window on the interactions;
2. iterative k-core: drop users and items with fewer than ``k`` interactions until stable;
3. sliding-window rows: every interaction after a user's first becomes a row
   ``(user_id, history, target, timestamp)`` with ``history`` the user's previous items, oldest
   first, truncated to the last ``max_history`` (10);
4. split: ``chronological`` sorts ALL rows by the target's time and cuts at 80% / 90% (8:1:1,
   the protocol of the paper, MiniOneRec and D3), or ``leave_last_out`` gives each user's last
   row to test, the one before to valid and the rest to train.
"""
from __future__ import annotations

import calendar
import datetime as dt
import logging
import math
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

PROTOCOLS = ("chronological", "leave_last_out")


def k_core(interactions: pd.DataFrame, k: int) -> pd.DataFrame:
    """Interactions of the k-core: every remaining user and item has at least ``k`` rows.

    Filters users and items alternately until nothing changes (dropping an item can push a user
    under ``k`` and vice versa). ``k <= 1`` returns the table unchanged. Row order is kept.
    """
    if k <= 1:
        return interactions.reset_index(drop=True)
    kept = interactions
    rounds = 0
    while True:
        rounds += 1
        keep = (_occurrences(kept["user_id"]) >= k) & (_occurrences(kept["item_id"]) >= k)
        if keep.all():
            break
        kept = kept[keep].reset_index(drop=True)
    logger.info(
        "%d-core after %d rounds: %d of %d interactions, %d users, %d items",
        k, rounds, len(kept), len(interactions), kept["user_id"].nunique(), kept["item_id"].nunique(),
    )
    return kept.reset_index(drop=True)


def _occurrences(column: pd.Series) -> np.ndarray:
    """How often each row's value occurs in the column (integer codes: no per-value objects)."""
    codes = pd.factorize(column)[0]
    return np.bincount(codes)[codes]


def to_unix_seconds(value: Any, name: str) -> int | None:
    """A time bound from the parameters: None, unix seconds, or an ISO date (UTC)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"parameter {name}: expected a date or unix seconds, got {value!r}")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, dt.datetime):
        return calendar.timegm(value.utctimetuple())
    if isinstance(value, dt.date):
        return calendar.timegm(value.timetuple())
    if isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"parameter {name}: expected an ISO date such as 2016-10-01, got {value!r}"
            ) from None
        return calendar.timegm(moment.utctimetuple())
    raise ValueError(f"parameter {name}: expected a date or unix seconds, got {value!r}")


def time_window(interactions: pd.DataFrame, start: Any = None, end: Any = None) -> pd.DataFrame:
    """Interactions with ``start <= timestamp < end`` (either bound may be None)."""
    start_s = to_unix_seconds(start, "time_window.start")
    end_s = to_unix_seconds(end, "time_window.end")
    keep = pd.Series(True, index=interactions.index)
    if start_s is not None:
        keep &= interactions["timestamp"] >= start_s
    if end_s is not None:
        keep &= interactions["timestamp"] < end_s
    return interactions[keep].reset_index(drop=True)


def sliding_window_rows(interactions: pd.DataFrame, max_history: int = 10) -> pd.DataFrame:
    """One row per interaction that has at least one earlier interaction of the same user.

    A user's interactions are ordered by time; equal times keep their table order. Rows come
    out grouped by user in the users' sorted order, chronologically within a user.
    """
    if max_history < 1:
        raise ValueError(f"max_history must be >= 1, got {max_history}")
    ordered = interactions.sort_values(["user_id", "timestamp"], kind="stable", ignore_index=True)
    n = len(ordered)
    user_codes = pd.factorize(ordered["user_id"])[0]
    item_codes, item_ids = pd.factorize(ordered["item_id"])
    # one Python string per distinct item, shared by every history that holds it
    items_in_order = np.array(item_ids.tolist(), dtype=object)[item_codes]
    starts_user = np.ones(n, dtype=bool)
    starts_user[1:] = user_codes[1:] != user_codes[:-1]
    user_start = np.maximum.accumulate(np.where(starts_user, np.arange(n), 0))
    targets = np.flatnonzero(~starts_user)  # every interaction after its user's first
    first = np.maximum(user_start[targets], targets - max_history)
    histories = [items_in_order[lo:hi].tolist() for lo, hi in zip(first.tolist(), targets.tolist())]
    return pd.DataFrame(
        {
            "user_id": ordered["user_id"].iloc[targets].astype(str).reset_index(drop=True),
            "history": pd.Series(histories, dtype=object),
            "target": ordered["item_id"].iloc[targets].astype(str).reset_index(drop=True),
            "timestamp": ordered["timestamp"].to_numpy()[targets].astype(np.int64),
        }
    )


def chronological_split(
    rows: pd.DataFrame, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Sort all rows by target time and cut: the first ``floor(n*r0)`` rows train, up to
    ``floor(n*(r0+r1))`` valid, the rest test.

    Ties in time keep the rows' incoming order (stable sort), so the cut is deterministic.
    """
    if len(ratios) != 3 or any(r < 0 for r in ratios) or not math.isclose(sum(ratios), 1.0):
        raise ValueError(f"ratios must be three non-negative numbers summing to 1, got {ratios}")
    ordered = rows.sort_values("timestamp", kind="stable", ignore_index=True)
    n = len(ordered)
    train_end = math.floor(n * ratios[0] + 1e-9)
    valid_end = math.floor(n * (ratios[0] + ratios[1]) + 1e-9)
    return (
        ordered.iloc[:train_end].reset_index(drop=True),
        ordered.iloc[train_end:valid_end].reset_index(drop=True),
        ordered.iloc[valid_end:].reset_index(drop=True),
    )


def leave_last_out_split(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Each user's last row is test, the one before valid, the rest train (per-user time
    order, ties keep the incoming order). A user with a single row has only a test row."""
    ordered = rows.sort_values(["user_id", "timestamp"], kind="stable", ignore_index=True)
    from_end = ordered.groupby("user_id", sort=False).cumcount(ascending=False)
    return (
        ordered[from_end >= 2].reset_index(drop=True),
        ordered[from_end == 1].reset_index(drop=True),
        ordered[from_end == 0].reset_index(drop=True),
    )


def split_statistics(
    train: pd.DataFrame, valid: pd.DataFrame, test: pd.DataFrame, **extra: Any
) -> dict:
    """The paper's Table 3 figures: users and items over all rows, rows per split."""
    everything = pd.concat([train, valid, test], ignore_index=True)
    items: set[str] = set(everything["target"])
    for history in everything["history"]:
        items.update(history)
    return {
        "users": int(everything["user_id"].nunique()),
        "items": len(items),
        "train": len(train),
        "valid": len(valid),
        "test": len(test),
        **extra,
    }


def make_sequences(
    interactions: pd.DataFrame,
    k: int = 5,
    max_history: int = 10,
    protocol: str = "chronological",
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
    start: Any = None,
    end: Any = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, int]:
    """Window, k-core, sliding-window rows and split; returns ``(train, valid, test, n_kept)``
    with ``n_kept`` the interactions left after the window and k-core."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"split protocol must be one of {PROTOCOLS}, got {protocol!r}")
    windowed = time_window(interactions, start, end)
    core = k_core(windowed, k)
    if core.empty:
        raise ValueError(
            f"no interactions left after the time window [{start}, {end}) and the {k}-core "
            f"({len(interactions)} before); lower split.k_core or widen the window"
        )
    rows = sliding_window_rows(core, max_history)
    if protocol == "chronological":
        train, valid, test = chronological_split(rows, tuple(ratios))
    else:
        train, valid, test = leave_last_out_split(rows)
    return train, valid, test, len(core)
