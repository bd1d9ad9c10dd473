"""The data sources ingest can read, by name: one registry instead of an if-chain per caller.

A source is a read function registered under its name::

    @register_source("custom", file_keys=("items", "interactions"), locate=custom_paths,
                     options={"timestamp_unit": "seconds", "min_rating": None},
                     summary="your own catalogue: items + interactions as CSV, Parquet or JSON Lines")
    def read_custom(request: ReadRequest) -> SourceTables: ...

``locate(root, dataset, files, options)`` returns the files the source reads (name -> path, each
checked to exist) from the ``raw_files`` catalog entry; ``read(request)`` returns the three ingest
tables. The ``raw_files`` dataset (:mod:`singer_rec.datasets.raw_files`) and the ingest node look a source up
here and nothing else, so adding one touches one module plus conf: the built-in readers register
in :mod:`singer_rec.data.sources`, any further source in a module ``singer_rec/data/source_<name>.py``,
which is imported (and so registered) the first time the registry is asked for a name.
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd


class SourceTables(NamedTuple):
    """What a source reads: ``items``, ``interactions`` and ``given_sequences`` (the ingest contract)."""

    items: pd.DataFrame
    interactions: pd.DataFrame
    given_sequences: pd.DataFrame


@dataclass(frozen=True)
class RawSource:
    """Which source, which dataset, its files (name -> path; empty for the demo) and options
    (what the ``raw_files`` dataset loads, :mod:`singer_rec.datasets.raw_files`)."""

    source: str
    dataset: str
    root: Path
    files: dict[str, Path] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ReadRequest(RawSource):
    """Everything a read function gets: the raw source (options with the defaults filled in) and
    what the ingest block adds."""

    seed: int = 0
    skip_bad_lines: bool = False
    params: dict[str, Any] = field(default_factory=dict)     # the whole ``ingest`` block (e.g. ``synthetic``)


Locate = Callable[[Path, str, Mapping[str, str], Mapping[str, Any]], dict[str, Path]]
Read = Callable[[ReadRequest], SourceTables]


@dataclass(frozen=True)
class DataSource:
    """One registered source: how to find its files and how to read them."""

    name: str
    read: Read
    locate: Locate | None = None          # None: the source reads no file (the synthetic demo)
    file_keys: tuple[str, ...] = ()       # names ``raw_files.files`` may set (file names under raw_root)
    options: Mapping[str, Any] = field(default_factory=dict)   # ``raw_files.options`` keys and defaults
    needs_dataset: bool = False           # globals ``dataset`` must be set (it names the files)
    summary: str = ""

    def with_defaults(self, options: Mapping[str, Any] | None) -> dict[str, Any]:
        """``options`` over the source's defaults; an unknown key is an error naming the allowed ones."""
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(f"raw_files.options: unknown option(s) {unknown} for source {self.name!r}; "
                             f"allowed: {sorted(self.options)}")
        return {**self.options, **options}


_REGISTRY: dict[str, DataSource] = {}
_DISCOVERED = False


def register_source(name: str, *, locate: Locate | None = None, file_keys: tuple[str, ...] = (),
                    options: Mapping[str, Any] | None = None, needs_dataset: bool = False,
                    summary: str = "") -> Callable[[Read], Read]:
    """Decorator: register ``read`` as source ``name`` (a name registered twice is an error)."""

    def decorate(read: Read) -> Read:
        if name in _REGISTRY and _REGISTRY[name].read is not read:
            raise ValueError(f"data source {name!r} is already registered ({_REGISTRY[name].read.__module__})")
        _REGISTRY[name] = DataSource(name, read, locate, tuple(file_keys), dict(options or {}),
                                     needs_dataset, summary)
        return read

    return decorate


def _discover() -> None:
    """Import the built-in readers and every ``singer_rec.data.source_<name>`` module (once)."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    import singer_rec.data as package

    importlib.import_module("singer_rec.data.sources")
    for module in pkgutil.iter_modules(package.__path__):
        if module.name.startswith("source_"):
            importlib.import_module(f"{package.__name__}.{module.name}")


def source_names() -> list[str]:
    """Every registered source, sorted."""
    _discover()
    return sorted(_REGISTRY)


def get_source(name: str) -> DataSource:
    """The registered source ``name``; a ``KeyError`` naming the known ones otherwise."""
    _discover()
    if name not in _REGISTRY:
        raise KeyError(f"unknown data source {name!r}; registered: {sorted(_REGISTRY)}")
    return _REGISTRY[name]
