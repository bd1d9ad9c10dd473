"""The catalog_update datasets: ``NewItemsDataset`` (the new items) and ``SkipEmptyDataset``.

``NewItemsDataset``: the new items of a catalog update, read from a table or a source's raw dump.

Formats (by the file name):

* ``.parquet``, ``.csv``, ``.tsv``: a table with the item fields ``item_id``, ``title`` and optional
  ``description``, ``brand``, ``categories`` (a list, or in a CSV a ``|``-separated string);
* otherwise the environment's source format (``source``): ``minionerec``: an ``item.json`` (one
  object keyed by item id); ``amazon2018`` / ``amazon2023``: a meta dump (JSON lines, optionally
  ``.gz``).

``load`` returns the items table (the ``items`` columns) plus a ``where`` column naming the file
and the row (table row, JSON-lines line or item key) of each item, so that a check can point at it.
Fields are cleaned as ingest cleans them. The dataset is read-only. Catalog entry::

    new_items:
      type: singer_rec.pipelines.catalog_update.datasets.NewItemsDataset
      filepath: ${runtime_params:new_items_path, ${globals:data_root}/01_raw/new_items.parquet}
      source: ${globals:source}

``SkipEmptyDataset``: an ``OptionalDataset`` (loads None while absent) whose save of ``""`` writes
nothing: the node's way to say "there is no such model folder to update" (no rl_model yet).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset, DatasetError

from singer_rec.data import sources
from singer_rec.datasets.optional import OptionalDataset

TABLE_SUFFIXES = (".parquet", ".csv", ".tsv")
OPTIONAL_FIELDS = ("description", "brand", "categories")


def _table_rows(path: Path) -> list[tuple[str, dict]]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        frame = pd.read_parquet(path)
    else:
        frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
        if "categories" in frame.columns:
            frame["categories"] = [[c for c in str(v).split("|") if c.strip()] for v in frame["categories"]]
    missing = [c for c in ("item_id", "title") if c not in frame.columns]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {missing}; a new-items table has item_id, title "
                           f"and optionally {list(OPTIONAL_FIELDS)} (columns: {list(frame.columns)})")
    rows = []
    for row, record in enumerate(frame.to_dict("records")):
        rows.append((f"{path} row {row}", {
            "item_id": "" if record.get("item_id") is None or pd.isna(record["item_id"]) else str(record["item_id"]).strip(),
            "title": sources.clean_text(record.get("title")),
            "description": sources.clean_text(record.get("description")),
            "brand": sources.clean_text(record.get("brand")),
            "categories": sources.clean_categories(record.get("categories")),
        }))
    return rows


def _minionerec_rows(path: Path) -> list[tuple[str, dict]]:
    """ingest's reader of an item.json (an item without a usable title is its error, naming the item)."""
    frame = sources.read_minionerec_items(path)
    return [(f"{path}: item {record['item_id']!r}", record) for record in frame.to_dict("records")]


def _amazon_rows(path: Path, source: str) -> list[tuple[str, dict]]:
    names = sources.AMAZON2018_FIELDS if source == "amazon2018" else sources.AMAZON2023_FIELDS
    rows = []
    for line, record in sources.iter_records(path, sources.IngestReport()):
        where = f"{path} line {line}"
        try:
            rows.append((where, sources.parse_meta(record, names, where)))
        except sources.DataFormatError as err:
            raise DatasetError(str(err)) from None
    return rows


def read_new_items(path: str | Path, source: str) -> pd.DataFrame:
    """The new items of ``path`` (see the module docstring), with their ``where`` column."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"new items: {path} not found (give the file with --params=new_items_path=...)")
    if path.name.lower().endswith(TABLE_SUFFIXES):
        rows = _table_rows(path)
    elif source == "minionerec":
        rows = _minionerec_rows(path)
    elif source in ("amazon2018", "amazon2023"):
        rows = _amazon_rows(path, source)
    else:
        raise DatasetError(f"{path}: source {source!r} has no raw item format; give a table "
                           f"({', '.join(TABLE_SUFFIXES)}) with item_id, title and optional {list(OPTIONAL_FIELDS)}")
    if not rows:
        raise DatasetError(f"{path}: no new items in the file")
    frame = pd.DataFrame([record for _, record in rows], columns=sources.ITEM_COLUMNS)
    frame["where"] = [where for where, _ in rows]
    return frame


class NewItemsDataset(AbstractDataset):
    def __init__(self, filepath: str, source: str = "synthetic", metadata: dict[str, Any] | None = None) -> None:
        self._filepath = str(filepath)
        self._source = source
        self.metadata = metadata

    def load(self) -> pd.DataFrame:
        return read_new_items(self._filepath, self._source)

    def save(self, data: Any) -> None:
        raise DatasetError("new_items is read-only: the pipeline never writes the new-items file")

    def _exists(self) -> bool:
        return Path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath, "source": self._source}


class SkipEmptyDataset(OptionalDataset):
    def save(self, data: Any) -> None:
        if isinstance(data, str) and data == "":
            return
        super().save(data)
