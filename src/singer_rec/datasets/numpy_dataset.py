"""``NumpyDataset``: a (versioned) Kedro dataset for numeric arrays in ``.npy`` files.

Saved with ``np.save`` and loaded with ``np.load(allow_pickle=False)``, so only plain numeric arrays
round-trip (object arrays are refused: no pickle). The file is written next to its destination
and renamed into place, so an existing file is always complete (``singer_rec.datasets.atomic``). Catalog entry::

    item_embeddings:
      type: singer_rec.datasets.numpy_dataset.NumpyDataset
      filepath: data/04_feature/item_embeddings.npy
      dtype: float32      # optional: cast on save and check on load
      versioned: true
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from kedro.io.core import AbstractVersionedDataset, DatasetError, Version

from singer_rec.datasets.atomic import write_atomically


class NumpyDataset(AbstractVersionedDataset[np.ndarray, np.ndarray]):
    def __init__(
        self,
        *,
        filepath: str,
        dtype: str | None = None,
        version: Version | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._dtype = np.dtype(dtype) if dtype else None
        self.metadata = metadata
        super().__init__(filepath=PurePosixPath(Path(filepath).as_posix()), version=version)

    def load(self) -> np.ndarray:
        path = Path(self._get_load_path().as_posix())
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as error:  # object arrays need pickle: refuse them
            raise DatasetError(f"{path}: not a plain numeric .npy array ({error})") from error
        if self._dtype is not None and array.dtype != self._dtype:
            raise DatasetError(f"{path}: dtype is {array.dtype}, expected {self._dtype}")
        return array

    def save(self, data: np.ndarray) -> None:
        array = np.asarray(data)
        if array.dtype == object:
            raise DatasetError(f"{self._filepath}: cannot save an object array (no pickle); got dtype object")
        if self._dtype is not None:
            array = array.astype(self._dtype, copy=False)
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.save(handle, array, allow_pickle=False)

        write_atomically(self._get_save_path().as_posix(), write, "array file")

    def _exists(self) -> bool:
        try:
            path = self._get_load_path()
        except DatasetError:
            return False
        return Path(path.as_posix()).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "dtype": str(self._dtype), "version": self._version}
