"""The ``custom`` source: your own catalogue as two tables, CSV, Parquet or JSON Lines.

* items: ``item_id``, ``title`` (required); ``description``, ``brand``, ``categories`` (optional;
  ``categories`` is a list in JSON Lines / Parquet, or names separated by ``|`` in any format);
* interactions: ``user_id``, ``item_id``, ``timestamp`` (required, an integer: unix seconds, or
  milliseconds with the option ``timestamp_unit: milliseconds``; a Parquet timestamp column is
  taken as it is, naive ones as UTC); ``rating`` (optional, a number;
  the option ``min_rating`` keeps only interactions rated at least that).

The format follows the file name: ``.csv`` / ``.csv.gz``, ``.parquet``, ``.jsonl`` / ``.json`` /
``.ndjson`` (optionally ``.gz``). Other columns are ignored. Every bad row raises
:class:`~singer_rec.data.sources.DataFormatError` naming the file, the line (``items.csv:7``; a
Parquet file names the row: ``items.parquet: row 7``) and the field, or with ``skip_bad_lines`` is
skipped, counted and logged: a missing or empty required field, an id that is not a string or an
integer, a title without a letter or digit, a duplicate item id (naming where it was first seen),
a timestamp that is not a non-negative integer, a rating that is not a number, an interaction whose
item is not in the items file. Exact duplicate interactions are dropped and counted; items nobody
interacted with are dropped. A missing, empty or unreadable file, a missing required column, or an
unsupported suffix is always an error.
"""
from __future__ import annotations

import csv
import datetime
import gzip
import logging
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from singer_rec.data.registry import ReadRequest, SourceTables, register_source
from singer_rec.data.sources import (
    ITEM_COLUMNS,
    DataFormatError,
    IngestReport,
    _as_id,
    _as_timestamp,
    _required,
    clean_categories,
    clean_text,
    empty_given_sequences,
    is_usable_title,
    iter_records,
    join_items_and_interactions,
)

logger = logging.getLogger(__name__)

ITEM_FIELDS = ("item_id", "title")                       # required; description, brand, categories optional
INTERACTION_FIELDS = ("user_id", "item_id", "timestamp")  # required; rating optional
FORMATS = {".csv": "csv", ".csv.gz": "csv", ".parquet": "parquet", ".jsonl": "jsonl", ".jsonl.gz": "jsonl",
           ".json": "jsonl", ".json.gz": "jsonl", ".ndjson": "jsonl", ".ndjson.gz": "jsonl"}
TIMESTAMP_UNITS = {"seconds": 1, "milliseconds": 1000}
CATEGORY_SEPARATOR = "|"
DEFAULT_OPTIONS = {"timestamp_unit": "seconds", "min_rating": None}


def file_format(path: Path) -> str:
    """``csv``, ``parquet`` or ``jsonl`` from the file name; an unsupported suffix is an error."""
    name = path.name.lower()
    for suffix in sorted(FORMATS, key=len, reverse=True):
        if name.endswith(suffix):
            return FORMATS[suffix]
    raise DataFormatError(f"{path}: unsupported file type; use one of {', '.join(FORMATS)}")


def check_options(options: Mapping[str, Any]) -> None:
    unit = options.get("timestamp_unit")
    if unit not in TIMESTAMP_UNITS:
        raise ValueError(f"raw_files.options.timestamp_unit must be one of {list(TIMESTAMP_UNITS)}, got {unit!r}")
    low = options.get("min_rating")
    if low is not None and (isinstance(low, bool) or not isinstance(low, (int, float))):
        raise ValueError(f"raw_files.options.min_rating must be a number or null, got {low!r}")


# --------------------------------------------------------------------------- rows of a file


def _csv_rows(path: Path, required: tuple[str, ...], report: IngestReport) -> Iterator[tuple[str, dict]]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    line = 1
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            header = [name.strip() for name in (reader.fieldnames or [])]
            if not header:
                raise DataFormatError(f"{path}: empty file (no header line)")
            reader.fieldnames = header
            missing = [name for name in required if name not in header]
            if missing:
                raise DataFormatError(f"{path}:1: missing required column(s) {missing} (columns: {header})")
            for row in reader:
                line = reader.line_num
                report.lines_read += 1
                if None in row:  # more cells than the header has names
                    raise DataFormatError(f"{path}:{line}: {len(header) + len(row[None])} fields, "
                                          f"but the header has {len(header)}")
                if not any((value or "").strip() for value in row.values()):
                    continue  # a blank line
                yield f"{path}:{line}", {k: (v if v is None or v.strip() else None) for k, v in row.items()}
    except UnicodeDecodeError:
        raise DataFormatError(f"{path}:{_first_bad_utf8_line(path)}: not valid UTF-8") from None
    except (OSError, EOFError, csv.Error) as error:
        raise DataFormatError(f"{path}:{line}: cannot read the file ({error})") from None


def _first_bad_utf8_line(path: Path) -> int:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 1


def _parquet_rows(path: Path, required: tuple[str, ...], report: IngestReport) -> Iterator[tuple[str, dict]]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises several types for a file that is not Parquet
        raise DataFormatError(f"{path}: cannot read the file as Parquet ({error})") from None
    columns = parquet.schema_arrow.names
    missing = [name for name in required if name not in columns]
    if missing:
        raise DataFormatError(f"{path}: missing required column(s) {missing} (columns: {columns})")
    number = 0
    for batch in parquet.iter_batches(batch_size=10_000):
        for record in batch.to_pylist():
            number += 1
            report.lines_read += 1
            yield f"{path}: row {number}", record


def _jsonl_rows(path: Path, report: IngestReport, skip_bad_lines: bool) -> Iterator[tuple[str, dict]]:
    for number, record in iter_records(path, report, skip_bad_lines):
        yield f"{path}:{number}", record


def table_rows(path: Path, required: tuple[str, ...], report: IngestReport,
               skip_bad_lines: bool = False) -> Iterator[tuple[str, dict]]:
    """``(where, record)`` for every row of a CSV, Parquet or JSON Lines file (``where`` = file:line)."""
    path = Path(path)
    kind = file_format(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found")
    if kind == "csv":
        rows = _csv_rows(path, required, report)
    elif kind == "parquet":
        rows = _parquet_rows(path, required, report)
    else:
        rows = _jsonl_rows(path, report, skip_bad_lines)
    n = 0
    for where, record in rows:
        n += 1
        yield where, record
    if n == 0:
        raise DataFormatError(f"{path}: empty file (no rows)")


# --------------------------------------------------------------------------- fields


def _text(record: dict, name: str) -> str:
    value = record.get(name)
    if isinstance(value, float) and math.isnan(value):
        return ""
    return clean_text(value)


def _categories(value: Any) -> list[str]:
    if isinstance(value, str):
        value = value.split(CATEGORY_SEPARATOR)
    elif isinstance(value, np.ndarray):
        value = value.tolist()
    return clean_categories(value)


def parse_item(record: dict, where: str) -> dict:
    """One cleaned ``items`` row; ``where`` names file:line."""
    item = _as_id(_required(record, "item_id", where), "item_id", where)
    if not item:
        raise DataFormatError(f"{where}: missing required field 'item_id'")
    title = clean_text(_required(record, "title", where))
    if not is_usable_title(title):
        raise DataFormatError(f"{where}: field 'title' has no letter or digit: {str(record['title'])[:60]!r}")
    return {"item_id": item, "title": title, "description": _text(record, "description"),
            "brand": _text(record, "brand"), "categories": _categories(record.get("categories"))}


def parse_rating(value: Any, where: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise DataFormatError(f"{where}: field 'rating' must be a number, got {value!r}")
    try:
        rating = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise DataFormatError(f"{where}: field 'rating' must be a number, got {value!r}") from None
    if not math.isfinite(rating):
        raise DataFormatError(f"{where}: field 'rating' must be a finite number, got {value!r}")
    return rating


def _datetime_seconds(value: datetime.datetime) -> int:
    """Unix seconds of a typed date-time (a Parquet timestamp column); naive ones are UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    return int(value.timestamp() // 1)


def parse_interaction(record: dict, where: str, divisor: int = 1) -> tuple[str, str, int, float | None]:
    """``(user_id, item_id, timestamp, rating)`` of one interaction row."""
    user = _as_id(_required(record, "user_id", where), "user_id", where)
    item = _as_id(_required(record, "item_id", where), "item_id", where)
    value = _required(record, "timestamp", where)
    if isinstance(value, datetime.datetime):
        timestamp = _datetime_seconds(value)
    else:
        timestamp = _as_timestamp(value, "timestamp", where, divisor)
    return user, item, timestamp, parse_rating(record.get("rating"), where)


# --------------------------------------------------------------------------- reading


def _fail_or_skip(error: DataFormatError, report: IngestReport, skip_bad_lines: bool) -> None:
    if not skip_bad_lines:
        raise error
    report.record_bad_line(str(error))


def read_custom_items(path: str | Path, report: IngestReport, skip_bad_lines: bool = False) -> pd.DataFrame:
    """The ``items`` table of an items file, in file order; a duplicate id is an error."""
    path = Path(path)
    seen: dict[str, str] = {}
    rows = []
    for where, record in table_rows(path, ITEM_FIELDS, report, skip_bad_lines):
        try:
            row = parse_item(record, where)
            if row["item_id"] in seen:
                raise DataFormatError(f"{where}: duplicate item id {row['item_id']!r} "
                                      f"(first seen at {seen[row['item_id']]})")
        except DataFormatError as error:
            _fail_or_skip(error, report, skip_bad_lines)
            continue
        seen[row["item_id"]] = where
        rows.append(row)
    if not rows:
        raise DataFormatError(f"{path}: no usable item")
    return pd.DataFrame(rows, columns=ITEM_COLUMNS)


def read_custom_interactions(path: str | Path, known_items: set[str], items_name: str, report: IngestReport,
                             skip_bad_lines: bool = False, timestamp_unit: str = "seconds",
                             min_rating: float | None = None) -> pd.DataFrame:
    """The ``interactions`` table (user_id, item_id, timestamp in seconds); every item must be known."""
    path = Path(path)
    divisor = TIMESTAMP_UNITS[timestamp_unit]
    users: list[str] = []
    items: list[str] = []
    times: list[int] = []
    below = 0
    for where, record in table_rows(path, INTERACTION_FIELDS, report, skip_bad_lines):
        try:
            user, item, timestamp, rating = parse_interaction(record, where, divisor)
            if item not in known_items:
                raise DataFormatError(f"{where}: field 'item_id': item {item!r} is not in {items_name}")
            if min_rating is not None and rating is None:
                raise DataFormatError(f"{where}: missing field 'rating' (min_rating is set)")
        except DataFormatError as error:
            _fail_or_skip(error, report, skip_bad_lines)
            continue
        if min_rating is not None and rating < min_rating:
            below += 1
            continue
        users.append(user)
        items.append(item)
        times.append(timestamp)
    if below:
        logger.info("%s: %d interactions rated below min_rating %s dropped", path.name, below, min_rating)
    frame = pd.DataFrame({"user_id": users, "item_id": items, "timestamp": np.asarray(times, dtype=np.int64)})
    before = len(frame)
    frame = frame.drop_duplicates(ignore_index=True)
    report.duplicate_interactions += before - len(frame)
    if frame.empty:
        raise DataFormatError(f"{path}: no usable interaction")
    return frame


def read_custom(items_path: str | Path, interactions_path: str | Path, skip_bad_lines: bool = False,
                timestamp_unit: str = "seconds", min_rating: float | None = None
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(items, interactions)`` of a custom catalogue (the module docstring has the schema)."""
    check_options({"timestamp_unit": timestamp_unit, "min_rating": min_rating})
    items_path, interactions_path = Path(items_path), Path(interactions_path)
    report = IngestReport()
    items = read_custom_items(items_path, report, skip_bad_lines)
    interactions = read_custom_interactions(interactions_path, set(items["item_id"]), items_path.name, report,
                                            skip_bad_lines, timestamp_unit, min_rating)
    n_items = len(items)
    items, interactions = join_items_and_interactions(items, interactions, report)
    report.log(f"custom ({items_path.name} + {interactions_path.name})")
    if len(items) < n_items:
        logger.info("custom: %d of %d items have no interaction and are dropped", n_items - len(items), n_items)
    return items.reset_index(drop=True), interactions


# --------------------------------------------------------------------------- registry


def _find(root: Path, stem: str) -> Path:
    tried = [f"{stem}{suffix}" for suffix in FORMATS]
    for name in tried:
        if (root / name).is_file():
            return root / name
    raise DataFormatError(f"{root}: none of the files {', '.join(tried)} exists "
                          f"(or name the file: raw_files.files.{stem})")


def custom_paths(root: Path, dataset: str, files: Mapping[str, str], options: Mapping[str, Any]) -> dict[str, Path]:
    """``{"items": path, "interactions": path}``: ``files`` (relative to ``root``, or absolute), else
    ``items.<suffix>`` / ``interactions.<suffix>`` under ``root``; each checked to exist and readable."""
    check_options(options)
    root = Path(root)
    paths = {}
    for key in ("items", "interactions"):
        path = root / files[key] if files.get(key) else _find(root, key)
        file_format(path)
        if not path.is_file():
            raise DataFormatError(f"{path}: the {key} file does not exist")
        paths[key] = path
    return paths


@register_source("custom", locate=custom_paths, file_keys=("items", "interactions"), options=DEFAULT_OPTIONS,
                 summary="your own catalogue: items + interactions as CSV, Parquet or JSON Lines")
def _read_custom(request: ReadRequest) -> SourceTables:
    items, interactions = read_custom(
        request.files["items"], request.files["interactions"], skip_bad_lines=request.skip_bad_lines,
        timestamp_unit=request.options["timestamp_unit"], min_rating=request.options["min_rating"],
    )
    return SourceTables(items, interactions, empty_given_sequences())


__all__ = ["read_custom", "read_custom_items", "read_custom_interactions", "custom_paths", "file_format",
           "table_rows"]
