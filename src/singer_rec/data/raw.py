"""The raw files of one source as a Kedro dataset (``raw_files``), so lineage starts at the files.

    raw_files:
      type: singer_rec.data.raw.RawFilesDataset
      source: ${globals:source}
      dataset: ${globals:dataset}
      root: ${runtime_params:raw_root, ${globals:raw_root}}

Loading resolves the files the source reads (by the naming rules of :mod:`singer_rec.data.sources`),
checks that they exist and returns a :class:`RawSource`; the ingest node streams them (so a bad
line is reported with its file and line). Raw data is read-only: saving is refused.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from singer_rec.data import sources


@dataclass(frozen=True)
class RawSource:
    """Which source, which dataset, and its files (name -> path); ``files`` is empty for the demo."""

    source: str
    dataset: str
    root: Path
    files: dict[str, Path] = field(default_factory=dict)


def resolve_files(source: str, root: Path, dataset: str, reviews_file: str | None = None,
                  meta_file: str | None = None) -> dict[str, Path]:
    """The files ``source`` reads under ``root``; raises ``DataFormatError`` naming a missing one."""
    if source not in sources.SOURCES:
        raise DatasetError(f"raw_files: source must be one of {list(sources.SOURCES)}, got {source!r}")
    if source == "synthetic":
        return {}
    if not dataset:
        raise DatasetError(f"raw_files: a dataset name is required for source {source!r} (globals: dataset)")
    if source == "minionerec":
        paths = sources.minionerec_paths(root, dataset)
        train = paths.pop("train_full")
        partial = paths.pop("train_partial")
        paths["train"] = train if train.is_file() else partial
        for name, path in paths.items():
            if not path.is_file():
                raise sources.DataFormatError(f"{path}: missing {source} file ({name}) under raw_root {root}")
        return paths
    return sources.amazon_dump_paths(root, dataset, source, reviews_file, meta_file)


class RawFilesDataset(AbstractDataset):
    """Read-only pointer to a source's raw files; loads a :class:`RawSource` (paths, checked)."""

    def __init__(self, source: str, root: str = "", dataset: str = "", reviews_file: str | None = None,
                 meta_file: str | None = None, metadata: dict[str, Any] | None = None):
        self._source = source
        self._root = Path(root)
        self._dataset = dataset or ""
        self._reviews_file = reviews_file
        self._meta_file = meta_file
        self.metadata = metadata

    def load(self) -> RawSource:
        files = resolve_files(self._source, self._root, self._dataset, self._reviews_file, self._meta_file)
        return RawSource(self._source, self._dataset, self._root, files)

    def save(self, data: Any) -> None:
        raise DatasetError("raw_files is read-only: raw data is never written by the pipeline")

    def _exists(self) -> bool:
        try:
            self.load()
        except (DatasetError, sources.DataFormatError):
            return False
        return True

    def _describe(self) -> dict[str, Any]:
        return {"source": self._source, "root": str(self._root), "dataset": self._dataset}
