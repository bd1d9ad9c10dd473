"""k-core, time window, sliding-window rows and the two split protocols on hand-made tables."""
import numpy as np
import pandas as pd
import pytest

from singer_rec.data.split import (
    chronological_split,
    k_core,
    leave_last_out_split,
    make_sequences,
    sliding_window_rows,
    split_statistics,
    time_window,
    to_unix_seconds,
)


def _interactions(rows):
    users, items, times = zip(*rows)
    return pd.DataFrame({"user_id": users, "item_id": items, "timestamp": np.array(times, dtype=np.int64)})


def test_k_core_iterates_until_stable():
    # 2-core: round 1 drops u4 (1 row) and d (1 row); that leaves u3 and c with 1 row each,
    # which round 2 drops; a single pass would wrongly keep u3 and c.
    table = _interactions([
        ("u1", "a", 1), ("u1", "b", 2), ("u1", "c", 3),
        ("u2", "a", 1), ("u2", "b", 2),
        ("u3", "a", 1), ("u3", "d", 2),
        ("u4", "c", 1),
    ])
    core = k_core(table, 2)
    assert core.values.tolist() == [["u1", "a", 1], ["u1", "b", 2], ["u2", "a", 1], ["u2", "b", 2]]
    assert k_core(table, 1).equals(table)
    assert k_core(table, 3).empty


def test_time_window_bounds_are_half_open_and_accept_dates():
    day = 86400
    start = to_unix_seconds("2016-10-01", "start")
    assert start == 1475280000
    table = _interactions([("u", "a", start - 1), ("u", "b", start), ("u", "c", start + day)])
    assert time_window(table, "2016-10-01", start + day)["item_id"].tolist() == ["b"]
    assert time_window(table, None, None)["item_id"].tolist() == ["a", "b", "c"]
    with pytest.raises(ValueError, match="time_window.end: expected an ISO date"):
        time_window(table, None, "next tuesday")


def test_sliding_window_rows_truncate_history_to_last_ten():
    items = [f"i{n}" for n in range(12)]
    table = _interactions([("u1", item, 100 + n) for n, item in enumerate(items)] + [("u0", "x", 5), ("u0", "y", 5)])
    rows = sliding_window_rows(table, max_history=10)
    assert rows["user_id"].tolist() == ["u0"] + ["u1"] * 11
    # equal times keep the table order
    assert rows.iloc[0].to_dict() == {"user_id": "u0", "history": ["x"], "target": "y", "timestamp": 5}
    assert rows.iloc[1]["history"] == ["i0"] and rows.iloc[1]["target"] == "i1"
    assert rows.iloc[10]["history"] == items[0:10] and rows.iloc[10]["target"] == "i10"
    assert rows.iloc[11]["history"] == items[1:11] and rows.iloc[11]["target"] == "i11"
    assert rows.iloc[11]["timestamp"] == 111
    assert rows["timestamp"].dtype == np.int64


def _rows(times):
    return pd.DataFrame({
        "user_id": [f"u{n % 3}" for n in range(len(times))],
        "history": [[f"h{n}"] for n in range(len(times))],
        "target": [f"t{n}" for n in range(len(times))],
        "timestamp": np.array(times, dtype=np.int64),
    })


def test_chronological_split_cuts_all_rows_by_target_time():
    rows = _rows([90, 10, 80, 20, 70, 30, 60, 40, 50, 100])  # shuffled times
    train, valid, test = chronological_split(rows)
    assert train["timestamp"].tolist() == [10, 20, 30, 40, 50, 60, 70, 80]
    assert valid["timestamp"].tolist() == [90]
    assert test["timestamp"].tolist() == [100]
    # 7 rows: floor(5.6) = 5 train, floor(6.3) = 6 -> 1 valid, 1 test
    train, valid, test = chronological_split(_rows([1, 2, 3, 4, 5, 6, 7]))
    assert (len(train), len(valid), len(test)) == (5, 1, 1)
    # equal times keep the incoming order at the cut
    train, valid, test = chronological_split(_rows([5] * 10))
    assert train["target"].tolist() == [f"t{n}" for n in range(8)] and test["target"].tolist() == ["t9"]
    with pytest.raises(ValueError, match="summing to 1"):
        chronological_split(rows, (0.8, 0.1, 0.2))


def test_leave_last_out_gives_each_users_last_rows_to_test_and_valid():
    rows = pd.DataFrame({
        "user_id": ["a", "a", "a", "a", "b", "b", "c"],
        "history": [["x"]] * 7,
        "target": ["a1", "a2", "a3", "a4", "b1", "b2", "c1"],
        "timestamp": np.array([4, 1, 3, 2, 9, 8, 5], dtype=np.int64),
    })
    train, valid, test = leave_last_out_split(rows)
    assert train["target"].tolist() == ["a2", "a4"]
    assert valid["target"].tolist() == ["a3", "b2"]
    assert test["target"].tolist() == ["a1", "b1", "c1"]


def test_make_sequences_and_statistics():
    # u1: 6 items, u2: 5 items, u3: 2 items (dropped by the 5-core, and so is item z)
    rows = [("u1", f"i{n}", 10 * n) for n in range(6)]
    rows += [("u2", f"i{n}", 10 * n + 5) for n in range(5)]
    rows += [("u3", "i0", 1), ("u3", "z", 2)]
    train, valid, test, kept = make_sequences(_interactions(rows), k=2, protocol="chronological")
    # 2-core keeps u1, u2, u3 minus z -> u3 has 1 row left -> dropped next round; i5 has 1 row
    assert kept == 10
    assert len(train) + len(valid) + len(test) == 8  # (5 - 1) + (5 - 1) rows
    assert (len(train), len(valid), len(test)) == (6, 1, 1)
    assert train["timestamp"].max() <= valid["timestamp"].min() <= test["timestamp"].min()
    stats = split_statistics(train, valid, test, protocol="chronological")
    assert stats == {"users": 2, "items": 5, "train": 6, "valid": 1, "test": 1, "protocol": "chronological"}
    with pytest.raises(ValueError, match="protocol must be one of"):
        make_sequences(_interactions(rows), protocol="random")
    with pytest.raises(ValueError, match="no interactions left"):
        make_sequences(_interactions(rows), k=50)
