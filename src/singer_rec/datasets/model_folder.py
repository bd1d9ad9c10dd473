"""``ModelFolderDataset``: a versioned Kedro dataset for model folders (see ``singer_rec.modeling``).

``save`` takes the path of a finished folder written by a training process and moves (or copies)
it into place atomically: first into a hidden temporary folder next to the target, then one
rename. ``load`` returns the ``pathlib.Path`` of the folder; later stages open it with
``singer_rec.modeling.load_model_folder``. Catalog entry::

    sft_model:
      type: singer_rec.datasets.model_folder.ModelFolderDataset
      filepath: data/06_models/sft_model
      versioned: true
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io.core import AbstractVersionedDataset, DatasetError, Version

from singer_rec.modeling import META_FILE, replace_folder_atomically


class ModelFolderDataset(AbstractVersionedDataset[Any, Path]):
    def __init__(self, filepath: str, version: Version | None = None, move: bool = True,
                 metadata: dict[str, Any] | None = None) -> None:
        """``move``: move the source folder (cheap, same filesystem) instead of copying it."""
        super().__init__(PurePosixPath(Path(filepath).as_posix()), version, exists_function=self._is_model_folder)
        self._move = move
        self.metadata = metadata

    @staticmethod
    def _is_model_folder(path: str) -> bool:
        return (Path(path) / META_FILE).is_file()

    def load(self) -> Path:
        path = Path(str(self._get_load_path()))
        if not self._is_model_folder(str(path)):
            raise DatasetError(f"{path} is not a model folder ({META_FILE} missing)")
        return path

    def save(self, data: str | os.PathLike) -> None:
        source = Path(data)
        if not self._is_model_folder(str(source)):
            raise DatasetError(f"cannot save {source}: not a finished model folder ({META_FILE} missing)")
        target = Path(str(self._get_save_path()))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            staged = tmp / "folder"
            if self._move:
                shutil.move(str(source), str(staged))
            else:
                shutil.copytree(source, staged)
            replace_folder_atomically(staged, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _exists(self) -> bool:
        try:
            return self._is_model_folder(str(self._get_load_path()))
        except DatasetError:
            return False

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version, "move": self._move}
