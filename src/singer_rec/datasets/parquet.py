"""``ListParquetDataset``: ``pandas.ParquetDataset`` whose list columns load back as Python lists.

pyarrow hands list cells back as numpy arrays; this dataset turns every such cell into a plain
``list`` (numpy scalars into Python ones), so ``history``/``categories``/``codes`` columns
round-trip exactly and compare equal to what the node saved. Other columns keep pandas' default
dtypes (unlike ``dtype_backend: pyarrow``, which would change every column).

    train_sequences:
      type: singer_rec.datasets.parquet.ListParquetDataset
      filepath: data/03_primary/train_sequences.parquet
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from kedro_datasets.pandas import ParquetDataset


def lists_from_arrays(frame: pd.DataFrame) -> pd.DataFrame:
    """Replace numpy-array cells of object columns by Python lists (in place, returned)."""
    for column in frame.columns:
        values = frame[column]
        if values.dtype != object:
            continue
        if not any(isinstance(value, np.ndarray) for value in values):
            continue
        frame[column] = pd.Series(
            [value.tolist() if isinstance(value, np.ndarray) else value for value in values],
            index=frame.index,
            dtype=object,
        )
    return frame


class ListParquetDataset(ParquetDataset):
    """Parquet file of a DataFrame with list columns; loads lists as Python lists."""

    def load(self) -> pd.DataFrame:
        return lists_from_arrays(super().load())
