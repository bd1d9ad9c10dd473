"""The raw files of one source as a Kedro dataset (``raw_files``), so lineage starts at the files.

    raw_files:
      type: singer_rec.datasets.raw_files.RawFilesDataset
      source: ${globals:source}
      dataset: ${globals:dataset}
      root: ${runtime_params:raw_root, ${globals:raw_root}}
      files: {items: items.csv, interactions: interactions.csv}   # optional: file names under root
      options: {min_rating: 4}                                    # optional: the source's reading options

Loading looks the source up in :mod:`singer_rec.data.registry`, resolves the files it reads (by
its naming rules, or ``files``), checks that they exist and returns a :class:`RawSource`; the
ingest node streams them (so a bad line is reported with its file and line). Raw data is
read-only: saving is refused.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from singer_rec.data import registry, sources
from singer_rec.data.registry import RawSource


def resolve_files(source: str, root: Path, dataset: str, reviews_file: str | None = None,
                  meta_file: str | None = None, files: Mapping[str, str] | None = None,
                  options: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """The files ``source`` reads under ``root``; raises ``DataFormatError`` naming a missing one.

    ``files`` names files (relative to ``root``, or absolute) by the source's keys
    (``reviews``/``meta``, ``items``/``interactions``); ``reviews_file``/``meta_file`` are the
    older spelling of ``files: {reviews: ..., meta: ...}``.
    """
    try:
        spec = registry.get_source(source)
    except KeyError:
        raise DatasetError(f"raw_files: source must be one of {registry.source_names()}, got {source!r}") from None
    named = {key: value for key, value in (("reviews", reviews_file), ("meta", meta_file)) if value}
    named.update({str(k): str(v) for k, v in (files or {}).items() if v not in (None, "")})
    unknown = sorted(set(named) - set(spec.file_keys))
    if unknown:
        raise DatasetError(f"raw_files.files: source {source!r} takes {list(spec.file_keys) or 'no files'}, "
                           f"got {unknown}")
    try:
        spec.with_defaults(options)
    except ValueError as error:
        raise DatasetError(str(error)) from None
    if spec.locate is None:
        return {}
    if spec.needs_dataset and not dataset:
        raise DatasetError(f"raw_files: a dataset name is required for source {source!r} (globals: dataset)")
    return spec.locate(Path(root), dataset, named, spec.with_defaults(options))


class RawFilesDataset(AbstractDataset):
    """Read-only pointer to a source's raw files; loads a :class:`RawSource` (paths, checked)."""

    def __init__(self, source: str, root: str = "", dataset: str = "", reviews_file: str | None = None,
                 meta_file: str | None = None, files: dict[str, str] | None = None,
                 options: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None):
        self._source = source
        self._root = Path(root)
        self._dataset = dataset or ""
        self._reviews_file = reviews_file
        self._meta_file = meta_file
        self._files = dict(files or {})
        self._options = dict(options or {})
        self.metadata = metadata

    def load(self) -> RawSource:
        files = resolve_files(self._source, self._root, self._dataset, self._reviews_file, self._meta_file,
                              self._files, self._options)
        options = registry.get_source(self._source).with_defaults(self._options)
        return RawSource(self._source, self._dataset, self._root, files, options)

    def save(self, data: Any) -> None:
        raise DatasetError("raw_files is read-only: raw data is never written by the pipeline")

    def _exists(self) -> bool:
        try:
            self.load()
        except (DatasetError, sources.DataFormatError):
            return False
        return True

    def _describe(self) -> dict[str, Any]:
        return {"source": self._source, "root": str(self._root), "dataset": self._dataset,
                "files": self._files, "options": self._options}


__all__ = ["RawFilesDataset", "RawSource", "resolve_files"]
