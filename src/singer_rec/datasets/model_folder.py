"""``ModelFolderDataset``: a versioned Kedro dataset for model folders (see ``singer_rec.modeling``).

``save`` takes the path of a finished folder written by a training process and moves (or copies)
it into place atomically: first into a hidden temporary folder next to the target, then one
rename. A save that fails (a full disk while copying) leaves nothing behind: no partial folder
and no empty version folder, so the latest loadable version stays the previous one. ``load``
returns the ``pathlib.Path`` of the folder; later stages open it with
``singer_rec.modeling.load_model_folder``. :func:`folder_fingerprint` identifies a folder's
content (the MLflow hook tags each saved model folder with it). Catalog entry::

    sft_model:
      type: singer_rec.datasets.model_folder.ModelFolderDataset
      filepath: data/06_models/sft_model
      versioned: true
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io.core import AbstractVersionedDataset, DatasetError, Version

from singer_rec.datasets.atomic import remove_if_empty
from singer_rec.modeling import META_FILE, replace_folder_atomically


FINGERPRINT_CHUNK = 1 << 20


def folder_fingerprint(path: str | os.PathLike) -> str:
    """sha256 (16 hex digits) over the relative paths and bytes of every file in a folder, in sorted order."""
    root = Path(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(file.relative_to(root).as_posix().encode() + b"\0")
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(FINGERPRINT_CHUNK), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


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
        created = not target.parent.exists()  # a version folder made for this save only
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = staged = None
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
            staged = tmp / "folder"
            if self._move:
                shutil.move(str(source), str(staged))  # a copy across filesystems keeps the source until done
            else:
                shutil.copytree(source, staged)
            replace_folder_atomically(staged, target)
        except OSError as err:
            if self._move and staged is not None and staged.is_dir() and not source.exists():
                os.replace(staged, source)  # moved but not placed: hand the finished folder back
            raise DatasetError(f"saving the model folder {source} to {target} failed: {err}; nothing was kept "
                               f"there ({source} is {'unchanged' if source.is_dir() else 'gone'}), and the "
                               f"previous version, if any, is still the latest") from err
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            if created:
                remove_if_empty(target.parent)  # only if the save left it empty

    def _exists(self) -> bool:
        try:
            return self._is_model_folder(str(self._get_load_path()))
        except DatasetError:
            return False

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version, "move": self._move}
