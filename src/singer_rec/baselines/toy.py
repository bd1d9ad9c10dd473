"""A tiny sequence world with a learnable rule, for tests and demos: after item i comes (3*i + 1) mod n."""
from __future__ import annotations

import numpy as np
import pandas as pd


def successor(i: int, n: int) -> int:
    return (3 * i + 1) % n


def rule_tables(num_items: int = 40, num_users: int = 300, max_len: int = 6, seed: int = 0):
    """(item ids, train, valid, test) tables in the split format; valid/test follow the same rule."""
    rng = np.random.default_rng(seed)
    item_ids = [f"i{k}" for k in range(num_items)]
    tables = {"train": [], "valid": [], "test": []}
    for user in range(num_users):
        chain = [int(rng.integers(num_items))]
        while len(chain) < max_len + 3:
            chain.append(successor(chain[-1], num_items))
        ids = [item_ids[k] for k in chain]
        # leave-one-out: the last item is test, the one before valid, the rest train rows
        for end in range(1, len(ids) - 2):
            tables["train"].append((f"u{user}", ids[max(0, end - max_len):end], ids[end], end))
        tables["valid"].append((f"u{user}", ids[-2 - max_len:-2], ids[-2], len(ids) - 2))
        tables["test"].append((f"u{user}", ids[-1 - max_len:-1], ids[-1], len(ids) - 1))
    frames = {k: pd.DataFrame(v, columns=["user_id", "history", "target", "timestamp"]) for k, v in tables.items()}
    return item_ids, frames["train"], frames["valid"], frames["test"]
