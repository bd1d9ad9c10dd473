"""``ListParquetDataset``: ``pandas.ParquetDataset`` whose list columns load back as Python lists.

pyarrow hands list cells back as numpy arrays; this dataset turns every such cell into a plain
``list`` (numpy scalars into Python ones), so ``history``/``categories``/``codes`` columns
round-trip exactly and compare equal to what the node saved. Other columns keep pandas' default
dtypes (unlike ``dtype_backend: pyarrow``, which would change every column). A local save is
written next to its destination and renamed into place (``singer_rec.datasets.atomic``): a full
disk leaves no partial file or version that a later stage would load.

    train_sequences:
      type: singer_rec.datasets.parquet.ListParquetDataset
      filepath: data/03_primary/train_sequences.parquet
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from kedro.io.core import DatasetError, get_filepath_str
from kedro_datasets.pandas import ParquetDataset

from singer_rec.datasets.atomic import write_atomically


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

    def save(self, data: pd.DataFrame) -> None:
        if self._protocol != "file":
            return super().save(data)  # remote stores: their own object semantics
        save_path = get_filepath_str(self._get_save_path(), self._protocol)
        if Path(save_path).is_dir():
            raise DatasetError(f"{save_path}: saving {type(self).__name__} to a directory is not supported")
        if "partition_cols" in self._save_args:
            raise DatasetError(f"{type(self).__name__} does not support the save argument 'partition_cols'")
        write_atomically(save_path, lambda tmp: data.to_parquet(tmp, **self._save_args), "parquet file")
        self._invalidate_cache()
