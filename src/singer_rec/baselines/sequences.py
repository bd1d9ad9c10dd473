"""Item ids -> contiguous indices, and sequence tables -> padded index tensors for the baselines.

Index 0 is padding; item ``i`` of the catalogue (in the order given) is index ``i + 1``.
Histories are left-padded so the last column is always the most recent item.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

PAD = 0
SEQUENCE_COLUMNS = ("history", "target")


class ItemIndex:
    """Bidirectional map item_id <-> index in 1..n (0 is padding)."""

    def __init__(self, item_ids: Sequence[str]):
        ids = [str(i) for i in item_ids]
        self.item_ids = ids
        self._index = {item_id: position + 1 for position, item_id in enumerate(ids)}
        if len(self._index) != len(ids):
            seen: set[str] = set()
            duplicate = next(i for i in ids if i in seen or seen.add(i))
            raise ValueError(f"item catalogue lists item_id {duplicate!r} more than once")

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    def index_of(self, item_id: str, where: str = "") -> int:
        try:
            return self._index[str(item_id)]
        except KeyError:
            raise ValueError(f"{where}unknown item_id {item_id!r} (not in the item catalogue)") from None

    def item_of(self, index: int) -> str:
        if not 1 <= index <= self.num_items:
            raise ValueError(f"item index {index} outside 1..{self.num_items}")
        return self.item_ids[index - 1]


@dataclass
class EncodedSequences:
    """``histories`` [rows, max_len] left-padded indices; ``targets`` [rows] indices."""

    histories: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.targets)

    def full_sequences(self) -> torch.Tensor:
        """History followed by the target: [rows, max_len + 1], the training view."""
        return torch.cat([self.histories, self.targets[:, None]], dim=1)


def encode_sequences(table: pd.DataFrame, index: ItemIndex, max_len: int, name: str = "sequences") -> EncodedSequences:
    """Encode a ``{train,valid,test}_sequences`` table; keeps the newest ``max_len`` history items.

    Raises ValueError naming the table, row and field on missing columns, empty or malformed
    histories and unknown items.
    """
    missing = [c for c in SEQUENCE_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{name}: missing column(s) {missing}; expected {list(SEQUENCE_COLUMNS)}")
    if len(table) == 0:
        raise ValueError(f"{name}: no rows")
    histories = np.zeros((len(table), max_len), dtype=np.int64)
    targets = np.zeros(len(table), dtype=np.int64)
    for row, (history, target) in enumerate(zip(table["history"], table["target"])):
        where = f"{name} row {row}: "
        if isinstance(history, str) or not hasattr(history, "__len__"):
            raise ValueError(f"{where}field 'history' must be a list of item ids, got {type(history).__name__}")
        if len(history) == 0:
            raise ValueError(f"{where}field 'history' is empty")
        recent = [index.index_of(i, where + "field 'history': ") for i in list(history)[-max_len:]]
        histories[row, max_len - len(recent):] = recent
        targets[row] = index.index_of(target, where + "field 'target': ")
    return EncodedSequences(torch.from_numpy(histories), torch.from_numpy(targets))
