"""Old versions of versioned outputs: list them and delete all but the newest few (``kedro prune``).

Every run adds a version folder to each versioned dataset it saves (Kedro's layout:
``<filepath>/<version>/<file name>``, the version a UTC timestamp such as
``2026-01-02T03.04.05.678Z``), and a load takes the newest. Models and embeddings pile up this way,
a model folder per training run. :func:`stale_versions` finds, for every versioned catalog entry
(dataset factories such as ``"{variant}.rl_model"`` included), the version folders older than the
newest ``keep``; only folders whose name is a Kedro version and that hold the dataset's file are
ever touched, so nothing a load could return is removed.
"""
from __future__ import annotations

import glob
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VERSION_NAME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}\.\d{2}\.\d{2}\.\d{3}Z$")  # kedro.io.core.VERSION_FORMAT
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")


@dataclass(frozen=True)
class DatasetVersions:
    """The version folders of one versioned dataset, oldest first."""

    dataset: str
    root: Path
    versions: tuple[Path, ...]

    def stale(self, keep: int) -> tuple[Path, ...]:
        return self.versions[: max(len(self.versions) - keep, 0)]


def _versioned_filepaths(catalog: Mapping[str, Any]) -> dict[str, str]:
    """Catalog name -> filepath of every versioned entry (the name may be a factory pattern)."""
    paths = {}
    for name, entry in catalog.items():
        if name.startswith("_") or not isinstance(entry, Mapping) or not entry.get("versioned"):
            continue
        if isinstance(entry.get("filepath"), str):
            paths[name] = entry["filepath"]
    return paths


def dataset_versions(catalog: Mapping[str, Any], project_root: str | Path = ".") -> list[DatasetVersions]:
    """The version folders on disk of every versioned entry of a resolved catalog configuration."""
    found: dict[Path, DatasetVersions] = {}
    root = Path(project_root)
    # shortest name first: where two entries share a folder (catalog_update writes item_sids under
    # its own name), the folder is listed once, under the stage's name
    for name, filepath in sorted(_versioned_filepaths(catalog).items(), key=lambda kv: (len(kv[0]), kv[0])):
        pattern = _PLACEHOLDER.sub("*", filepath)  # a factory entry: every namespace's folder
        for dataset_root in sorted(glob.glob(str(root / pattern))):
            dataset_root = Path(dataset_root)
            if not dataset_root.is_dir() or dataset_root.resolve() in found:
                continue
            versions = tuple(sorted(
                p for p in dataset_root.iterdir()
                if p.is_dir() and VERSION_NAME.match(p.name) and (p / dataset_root.name).exists()))
            if versions:
                label = name if pattern == filepath else f"{name} ({dataset_root.relative_to(root)})"
                found[dataset_root.resolve()] = DatasetVersions(label, dataset_root, versions)
    return sorted(found.values(), key=lambda entry: entry.dataset)


def prune_versions(catalog: Mapping[str, Any], keep: int, project_root: str | Path = ".",
                   dry_run: bool = False) -> list[tuple[DatasetVersions, tuple[Path, ...], int]]:
    """Delete every version older than the newest ``keep`` (>= 1) of each versioned dataset.

    Returns (dataset, removed folders, their bytes) for each dataset with versions; with
    ``dry_run`` nothing is deleted.
    """
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"keep must be an integer >= 1 (the newest version is what a load returns), got {keep!r}")
    result = []
    for entry in dataset_versions(catalog, project_root):
        stale = entry.stale(keep)
        size = sum(folder_size(folder) for folder in stale)
        if not dry_run:
            for folder in stale:
                shutil.rmtree(folder)
        result.append((entry, stale, size))
    return result


def folder_size(path: Path) -> int:
    """Bytes of every file under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
