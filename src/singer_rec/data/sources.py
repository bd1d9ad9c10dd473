"""Streaming readers for the built-in raw data sources: ``amazon2018``, ``amazon2023``,
``minionerec`` and ``synthetic``, each registered by name in :mod:`singer_rec.data.registry`
(the ``custom`` source, your own catalogue, is :mod:`singer_rec.data.source_custom`).

Every reader returns the two tables of the ingest contract (docs/architecture.md):

* ``items``: ``item_id`` str, ``title`` str, ``description`` str, ``brand`` str,
  ``categories`` list[str];
* ``interactions``: ``user_id`` str, ``item_id`` str, ``timestamp`` int64 (unix seconds);

plus ``given_sequences`` (``user_id``, ``history``, ``target``, ``timestamp``, ``split``): the
splits a source ships ready-made (``minionerec``), empty for the others.

Raw files are read line by line (``.json``/``.jsonl`` or gzipped), so memory grows with the
number of kept records, never with the file. A line may be strict JSON or a Python literal
(the older Amazon dumps); Python literals go through :func:`ast.literal_eval`, never ``eval``.
Bad input raises :class:`DataFormatError` naming the file and line (or field) unless
``skip_bad_lines`` is set, in which case the line is skipped, counted and logged.
"""
from __future__ import annotations

import ast
import csv
import gzip
import html
import json
import logging
import re
import zlib
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from singer_rec.data.registry import ReadRequest, SourceTables, register_source

logger = logging.getLogger(__name__)

ITEM_COLUMNS = ["item_id", "title", "description", "brand", "categories"]
INTERACTION_COLUMNS = ["user_id", "item_id", "timestamp"]
SEQUENCE_COLUMNS = ["user_id", "history", "target", "timestamp"]
GIVEN_SEQUENCE_COLUMNS = [*SEQUENCE_COLUMNS, "split"]
SPLITS = ("train", "valid", "test")


class DataFormatError(ValueError):
    """Raw input that cannot be read; the message names the file and line (or field)."""


@dataclass
class IngestReport:
    """Counts of what ingest read, kept and dropped (logged at the end of a read)."""

    lines_read: int = 0
    bad_lines: int = 0
    bad_line_examples: list[str] = field(default_factory=list)
    items_without_title: int = 0
    duplicate_items: int = 0
    duplicate_interactions: int = 0
    interactions_without_item: int = 0

    def record_bad_line(self, message: str) -> None:
        self.bad_lines += 1
        if len(self.bad_line_examples) < 5:  # the rest are only counted, not to flood the log
            self.bad_line_examples.append(message)
            logger.warning("skipped bad line: %s", message)

    def log(self, what: str) -> None:
        logger.info(
            "%s: %d lines read, %d bad lines skipped, %d items dropped without a usable title, "
            "%d duplicate item records merged, %d duplicate interactions dropped, "
            "%d interactions dropped because their item has no usable meta",
            what, self.lines_read, self.bad_lines, self.items_without_title,
            self.duplicate_items, self.duplicate_interactions, self.interactions_without_item,
        )


# --------------------------------------------------------------------------- text cleaning

_TAG = re.compile(r"<[^<>]*>")
# a tag cut off by the dump (``<span class="a-size-medium"``) or the tail of one (``Tools" />``)
_OPEN_TAG_AT_END = re.compile(r"<[A-Za-z!/][^<>]*$")
_SELF_CLOSING_TAIL = re.compile(r"[\"']?\s*/>")
_WHITESPACE = re.compile(r"\s+")


def clean_text(value: Any) -> str:
    """Plain text from a raw field: HTML entities decoded, tags removed, whitespace collapsed.

    Lists (Amazon descriptions are lists of paragraphs) are joined with a space; ``None`` and
    other non-text values become ``""``.
    """
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return clean_text(" ".join(clean_text(part) for part in value))
    if not isinstance(value, str):
        return ""
    text = value
    for _ in range(2):  # some dumps escape twice (``&amp;#39;``)
        unescaped = html.unescape(text)
        if unescaped == text:
            break
        text = unescaped
    text = _TAG.sub(" ", text)
    text = _OPEN_TAG_AT_END.sub(" ", text)
    text = _SELF_CLOSING_TAIL.sub(" ", text)
    return _WHITESPACE.sub(" ", text).strip()


def is_usable_title(title: str) -> bool:
    """A cleaned title is usable when it has at least one letter or digit."""
    return any(ch.isalnum() for ch in title)


def clean_categories(value: Any) -> list[str]:
    """Category path as a list of cleaned, non-empty names (order kept, repeats removed)."""
    if isinstance(value, str):
        value = [value] if value.strip() else []
    if not isinstance(value, (list, tuple)):
        return []
    names: list[str] = []
    for part in value:
        name = clean_text(part)
        if name and name not in names:
            names.append(name)
    return names


# --------------------------------------------------------------------------- line reading


def _open_binary(path: Path):
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def _parse_line(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as json_error:
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise DataFormatError(
                f"malformed line (neither JSON nor a Python literal): {json_error.msg}"
            ) from None


def iter_records(
    path: str | Path, report: IngestReport, skip_bad_lines: bool = False
) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, record)`` for every non-blank line of a JSON-lines file.

    Streams the file (``.json``/``.jsonl``, optionally ``.gz``); each line must be a JSON
    object or a Python dict literal. Raises :class:`DataFormatError` naming ``path:line`` for a
    bad line (or skips and counts it when ``skip_bad_lines``); a missing file or one without
    any record is always an error.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found")
    n_records = 0
    line_number = 0
    try:
        with _open_binary(path) as handle:
            lines = tqdm(handle, desc=f"reading {path.name}", unit=" lines", disable=None, mininterval=2)
            for line_number, raw in enumerate(lines, start=1):
                report.lines_read += 1
                try:
                    try:
                        text = raw.decode("utf-8")
                    except UnicodeDecodeError as error:
                        bad = raw[error.start : error.start + 1]
                        raise DataFormatError(
                            f"not valid UTF-8 (byte 0x{bad.hex()} at column {error.start + 1})"
                        ) from None
                    text = text.strip().lstrip("\ufeff")  # a byte-order mark on line 1
                    if not text:
                        continue
                    record = _parse_line(text)
                    if not isinstance(record, dict):
                        raise DataFormatError(
                            f"expected an object per line, got {type(record).__name__}"
                        )
                except DataFormatError as error:
                    message = f"{path}:{line_number}: {error}"
                    if not skip_bad_lines:
                        raise DataFormatError(message) from None
                    report.record_bad_line(message)
                    continue
                n_records += 1
                yield line_number, record
    except (OSError, EOFError, zlib.error) as error:  # truncated or corrupt gzip stream
        raise DataFormatError(
            f"{path}:{line_number + 1}: cannot read the file ({error})"
        ) from None
    if n_records == 0:
        raise DataFormatError(f"{path}: empty file (no records)")


def _required(record: dict, name: str, where: str) -> Any:
    value = record.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataFormatError(f"{where}: missing required field '{name}'")
    return value


def _as_id(value: Any, name: str, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataFormatError(f"{where}: field '{name}' must be a string, got {value!r}")
    return str(value).strip()


def _as_timestamp(value: Any, name: str, where: str, divisor: int = 1) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DataFormatError(
            f"{where}: field '{name}' must be a non-negative integer time, got {value!r}"
        )
    return value // divisor


# --------------------------------------------------------------------------- record parsing


@dataclass(frozen=True)
class FieldNames:
    """Where a dump keeps each field (Amazon 2018 and 2023 name them differently)."""

    user: str
    item: tuple[str, ...]  # first present wins (2023: parent_asin, else asin)
    time: str
    time_divisor: int  # 2023 timestamps are milliseconds
    title: str
    description: str
    brand: tuple[str, ...]
    categories: tuple[str, ...]


AMAZON2018_FIELDS = FieldNames(
    user="reviewerID", item=("asin",), time="unixReviewTime", time_divisor=1,
    title="title", description="description", brand=("brand",), categories=("category",),
)
AMAZON2023_FIELDS = FieldNames(
    user="user_id", item=("parent_asin", "asin"), time="timestamp", time_divisor=1000,
    title="title", description="description", brand=("store", "brand"),
    categories=("categories", "main_category"),
)


def _item_id(record: dict, names: FieldNames, where: str) -> str:
    for name in names.item:
        if record.get(name) not in (None, ""):
            return _as_id(record[name], name, where)
    raise DataFormatError(f"{where}: missing required field '{names.item[0]}'")


def _first_present(record: dict, candidates: tuple[str, ...]) -> Any:
    for name in candidates:
        if record.get(name) not in (None, "", []):
            return record[name]
    return None


def parse_review(record: dict, names: FieldNames, where: str) -> tuple[str, str, int]:
    """``(user_id, item_id, timestamp)`` of one review record; ``where`` names file:line."""
    user = _as_id(_required(record, names.user, where), names.user, where)
    item = _item_id(record, names, where)
    timestamp = _as_timestamp(
        _required(record, names.time, where), names.time, where, names.time_divisor
    )
    return user, item, timestamp


def parse_meta(record: dict, names: FieldNames, where: str) -> dict:
    """Cleaned item row (the ``items`` columns) of one meta record."""
    return {
        "item_id": _item_id(record, names, where),
        "title": clean_text(record.get(names.title)),
        "description": clean_text(record.get(names.description)),
        "brand": clean_text(_first_present(record, names.brand)),
        "categories": clean_categories(_first_present(record, names.categories)),
    }


def _conflicting_field(first: dict, second: dict) -> str | None:
    for name in ITEM_COLUMNS:
        if first[name] != second[name]:
            return name
    return None


def collect_interactions(
    records: Iterable[tuple[str, dict]], names: FieldNames, report: IngestReport,
    skip_bad_lines: bool,
) -> pd.DataFrame:
    """Interactions table from ``(where, record)`` pairs; exact duplicates are dropped.

    Ids are interned while streaming (each distinct id is one Python string, each review three
    integers), and the table's id columns are Arrow-backed strings: a review costs tens of bytes,
    not the hundreds of a Python string pair, so a 20M-review category fits in a few GB."""
    user_code: dict[str, int] = {}
    item_code: dict[str, int] = {}
    users = array("q")
    items = array("q")
    times = array("q")
    for where, record in records:
        try:
            user, item, timestamp = parse_review(record, names, where)
        except DataFormatError as error:
            if not skip_bad_lines:
                raise
            report.record_bad_line(str(error))
            continue
        users.append(user_code.setdefault(user, len(user_code)))
        items.append(item_code.setdefault(item, len(item_code)))
        times.append(timestamp)
    codes = pd.DataFrame({
        "user_id": np.frombuffer(users, dtype=np.int64),
        "item_id": np.frombuffer(items, dtype=np.int64),
        "timestamp": np.frombuffer(times, dtype=np.int64),
    })
    before = len(codes)
    codes = codes.drop_duplicates(ignore_index=True)  # same rows as on the strings: ids map 1:1
    report.duplicate_interactions += before - len(codes)
    frame = pd.DataFrame({
        "user_id": _strings_from_codes(codes["user_id"].to_numpy(), user_code),
        "item_id": _strings_from_codes(codes["item_id"].to_numpy(), item_code),
        "timestamp": codes["timestamp"].to_numpy(copy=True),
    })
    return frame


def _strings_from_codes(codes: np.ndarray, vocabulary: dict[str, int]) -> pd.Series:
    """The id column for interned ``codes`` (``vocabulary`` maps id -> code in first-seen order)."""
    return pd.Series(pd.Categorical.from_codes(codes, categories=pd.Index(list(vocabulary), dtype=str))).astype(str)


def collect_items(
    records: Iterable[tuple[str, dict]], names: FieldNames, report: IngestReport,
    skip_bad_lines: bool, wanted: set[str] | None = None,
) -> pd.DataFrame:
    """Items table from ``(where, record)`` meta pairs.

    Only items in ``wanted`` are kept (None keeps all), so memory follows the reviewed items,
    not the meta file. Items without a usable title are dropped and counted. The same item id
    twice with identical cleaned meta is merged; with different meta it is an error naming both
    lines and the first differing field (skipped, keeping the first, under ``skip_bad_lines``).
    """
    seen: dict[str, tuple[str, dict]] = {}  # item id -> (where first seen, cleaned row)
    for where, record in records:
        try:
            row = parse_meta(record, names, where)
        except DataFormatError as error:
            if not skip_bad_lines:
                raise
            report.record_bad_line(str(error))
            continue
        item = row["item_id"]
        if wanted is not None and item not in wanted:
            continue
        if item in seen:
            first_where, first_row = seen[item]
            conflict = _conflicting_field(first_row, row)
            if conflict is None:
                report.duplicate_items += 1
                continue
            message = (
                f"{where}: duplicate item id {item!r} with conflicting field '{conflict}' "
                f"(first seen at {first_where})"
            )
            if not skip_bad_lines:
                raise DataFormatError(message)
            report.record_bad_line(message)
            continue
        seen[item] = (where, row)
    rows = {item: row for item, (_, row) in seen.items() if is_usable_title(row["title"])}
    report.items_without_title += len(seen) - len(rows)
    frame = pd.DataFrame(list(rows.values()), columns=ITEM_COLUMNS)
    return frame.sort_values("item_id", kind="stable", ignore_index=True)


def _with_location(path: Path, records: Iterable[tuple[int, dict]]) -> Iterator[tuple[str, dict]]:
    for line_number, record in records:
        yield f"{path}:{line_number}", record


def join_items_and_interactions(
    items: pd.DataFrame, interactions: pd.DataFrame, report: IngestReport
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep interactions whose item has usable meta, and items that have interactions."""
    known = interactions["item_id"].isin(set(items["item_id"]))
    report.interactions_without_item += int((~known).sum())
    interactions = interactions[known]
    interactions = interactions.sort_values(
        ["user_id", "timestamp"], kind="stable", ignore_index=True
    )
    items = items[items["item_id"].isin(set(interactions["item_id"]))].reset_index(drop=True)
    return items, interactions


def empty_given_sequences() -> pd.DataFrame:
    """The ``given_sequences`` table of a source that ships no splits."""
    return pd.DataFrame(
        {
            "user_id": pd.Series([], dtype=str),
            "history": pd.Series([], dtype=object),
            "target": pd.Series([], dtype=str),
            "timestamp": pd.Series([], dtype=np.int64),
            "split": pd.Series([], dtype=str),
        }
    )


# --------------------------------------------------------------------------- amazon dumps


def _find_file(root: Path, stems: list[str], suffixes: tuple[str, ...]) -> Path:
    tried = []
    for stem in stems:
        for suffix in suffixes:
            candidate = root / f"{stem}{suffix}"
            tried.append(candidate.name)
            if candidate.is_file():
                return candidate
    raise DataFormatError(f"{root}: none of the files {', '.join(tried)} exists")


def amazon_dump_paths(
    raw_root: str | Path, dataset: str, version: str = "amazon2018",
    reviews_file: str | None = None, meta_file: str | None = None,
) -> dict[str, Path]:
    """``{"reviews": path, "meta": path}`` of one Amazon category dump, checked to exist.

    2018: reviews ``{dataset}_5.json[.gz]`` or ``{dataset}.json[.gz]`` and meta
    ``meta_{dataset}.json[.gz]``; 2023: ``{dataset}.jsonl[.gz]`` and ``meta_{dataset}.jsonl[.gz]``.
    ``reviews_file``/``meta_file`` (relative to ``raw_root``) override the lookup.
    """
    root = Path(raw_root)
    if version == "amazon2018":
        suffixes = (".json.gz", ".json", ".jsonl.gz", ".jsonl")
        review_stems = [f"{dataset}_5", dataset]
    elif version == "amazon2023":
        suffixes = (".jsonl.gz", ".jsonl", ".json.gz", ".json")
        review_stems = [dataset]
    else:
        raise ValueError(f"unknown Amazon dump version {version!r}")
    paths = {
        "reviews": root / reviews_file if reviews_file else _find_file(root, review_stems, suffixes),
        "meta": root / meta_file if meta_file else _find_file(root, [f"meta_{dataset}"], suffixes),
    }
    for name, path in paths.items():
        if not path.is_file():
            raise DataFormatError(f"{path}: the {name} file does not exist")
    return paths


def read_amazon_dump(
    raw_root: str | Path, dataset: str, version: str = "amazon2018",
    skip_bad_lines: bool = False, reviews_file: str | None = None, meta_file: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(items, interactions)`` of one Amazon category dump (2018 or 2023 layout; files as in
    :func:`amazon_dump_paths`; 2023 timestamps in milliseconds are converted to seconds)."""
    paths = amazon_dump_paths(raw_root, dataset, version, reviews_file, meta_file)
    names = AMAZON2018_FIELDS if version == "amazon2018" else AMAZON2023_FIELDS
    reviews_path, meta_path = paths["reviews"], paths["meta"]

    report = IngestReport()
    interactions = collect_interactions(
        _with_location(reviews_path, iter_records(reviews_path, report, skip_bad_lines)),
        names, report, skip_bad_lines,
    )
    items = collect_items(
        _with_location(meta_path, iter_records(meta_path, report, skip_bad_lines)),
        names, report, skip_bad_lines, wanted=set(interactions["item_id"]),
    )
    items, interactions = join_items_and_interactions(items, interactions, report)
    report.log(f"{version} {dataset} ({reviews_path.name} + {meta_path.name})")
    if items.empty:
        raise DataFormatError(
            f"{meta_path}: no reviewed item has a usable title; nothing to ingest"
        )
    return items, interactions


def read_synthetic(seed: int, skip_bad_lines: bool = False, **generator_args: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(items, interactions)`` of the synthetic demo (see :mod:`singer_rec.data.synthetic`),
    parsed and cleaned exactly like an Amazon 2018 dump."""
    from singer_rec.data.synthetic import generate_amazon_like

    reviews, meta = generate_amazon_like(seed, **generator_args)
    report = IngestReport(lines_read=len(reviews) + len(meta))
    interactions = collect_interactions(
        ((f"synthetic reviews:{n}", r) for n, r in enumerate(reviews, start=1)),
        AMAZON2018_FIELDS, report, skip_bad_lines,
    )
    items = collect_items(
        ((f"synthetic meta:{n}", r) for n, r in enumerate(meta, start=1)),
        AMAZON2018_FIELDS, report, skip_bad_lines, wanted=set(interactions["item_id"]),
    )
    items, interactions = join_items_and_interactions(items, interactions, report)
    report.log(f"synthetic demo (seed {seed})")
    return items, interactions


# --------------------------------------------------------------------------- minionerec


def _minionerec_description(value: Any) -> str:
    # MiniOneRec stores the Amazon description list as its Python repr: "['...', '...']"
    if isinstance(value, str) and value.startswith("["):
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = value
        return clean_text(parsed)
    return clean_text(value)


def read_minionerec_items(path: str | Path) -> pd.DataFrame:
    """Items of a MiniOneRec ``index/{DS}.item.json`` (one JSON object keyed by item id).

    Kept in the file's order (ids are row numbers there). Every item must have a usable title:
    the shipped splits refer to all of them, so none may be dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except UnicodeDecodeError as error:
        raise DataFormatError(f"{path}: not valid UTF-8 ({error.reason} at byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise DataFormatError(f"{path}:{error.lineno}: malformed JSON: {error.msg}") from None
    if not isinstance(document, dict) or not document:
        raise DataFormatError(f"{path}: empty file (expected an object of items)")
    rows = []
    for item_id, meta in document.items():
        where = f"{path}: item {item_id!r}"
        if not isinstance(meta, dict):
            raise DataFormatError(f"{where}: expected an object, got {type(meta).__name__}")
        title = clean_text(_required(meta, "title", where))
        if not is_usable_title(title):
            raise DataFormatError(f"{where}: field 'title' has no usable text")
        rows.append(
            {
                "item_id": str(item_id),
                "title": title,
                "description": _minionerec_description(meta.get("description")),
                "brand": clean_text(meta.get("brand")),
                "categories": clean_categories(meta.get("categories")),
            }
        )
    return pd.DataFrame(rows, columns=ITEM_COLUMNS)


def _parse_id_list(text: str, where: str) -> list[str]:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise DataFormatError(f"{where}: field 'history_item_id' is not a list: {text[:60]!r}") from None
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, (int, str)) and not isinstance(v, bool) for v in value
    ):
        raise DataFormatError(f"{where}: field 'history_item_id' is not a list of ids")
    return [str(v) for v in value]


def read_minionerec_sequences(
    path: str | Path, known_items: set[str], first_timestamp: int = 0
) -> pd.DataFrame:
    """Sequence rows of a MiniOneRec split CSV, row for row, streamed with :mod:`csv`.

    Columns used: ``user_id``, ``history_item_id`` (Python list of ids), ``item_id``. The CSVs
    carry no times; rows are in chronological order, so ``timestamp`` is the row's position
    (counting on from ``first_timestamp``, so train < valid < test).
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found")
    users: list[str] = []
    histories: list[list[str]] = []
    targets: list[str] = []
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = {"user_id", "history_item_id", "item_id"} - set(reader.fieldnames or [])
            if missing:
                raise DataFormatError(f"{path}:1: missing required column(s) {sorted(missing)}")
            for row in reader:
                where = f"{path}:{reader.line_num}"
                user = _required(row, "user_id", where).strip()
                history = _parse_id_list(_required(row, "history_item_id", where), where)
                target = _required(row, "item_id", where).strip()
                for item in (*history, target):
                    if item not in known_items:
                        raise DataFormatError(f"{where}: item id {item!r} is not in item.json")
                users.append(user)
                histories.append(history)
                targets.append(target)
    except UnicodeDecodeError as error:
        raise DataFormatError(f"{path}: not valid UTF-8 ({error.reason} at byte {error.start})") from None
    if not users:
        raise DataFormatError(f"{path}: empty file (no rows)")
    return pd.DataFrame(
        {
            "user_id": users,
            "history": histories,
            "target": targets,
            "timestamp": np.arange(first_timestamp, first_timestamp + len(users), dtype=np.int64),
        }
    )


def read_minionerec_interactions(path: str | Path, known_items: set[str]) -> pd.DataFrame:
    """Interactions rebuilt from ``derived/{DS}.user_sequences_from_valid_test.tsv``.

    One line per user with the chronological item ids; there are no times, so ``timestamp`` is
    the position in the user's sequence (0, 1, 2, ...).
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found")
    users: list[str] = []
    items: list[str] = []
    times: list[int] = []
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        if "item_ids_chronological" not in (reader.fieldnames or []):
            raise DataFormatError(f"{path}:1: missing required column 'item_ids_chronological'")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            user = _required(row, "user_id", where).strip()
            sequence = _required(row, "item_ids_chronological", where).split()
            for position, item in enumerate(sequence):
                if item not in known_items:
                    raise DataFormatError(f"{where}: item id {item!r} is not in item.json")
                users.append(user)
                items.append(item)
                times.append(position)
    if not users:
        raise DataFormatError(f"{path}: empty file (no rows)")
    return pd.DataFrame(
        {"user_id": users, "item_id": items, "timestamp": np.asarray(times, dtype=np.int64)}
    )


def minionerec_paths(raw_root: str | Path, dataset: str) -> dict[str, Path]:
    """Where the MiniOneRec files of ``dataset`` live under ``raw_root``."""
    root = Path(raw_root)
    split_name = f"{dataset}_5_2016-10-2018-11.csv"
    return {
        "items": root / "index" / f"{dataset}.item.json",
        "train_full": root / "train" / split_name,
        "train_partial": root / "derived" / f"{dataset}.train_recovered_partial.csv",
        "valid": root / "valid" / split_name,
        "test": root / "test" / split_name,
        "sequences": root / "derived" / f"{dataset}.user_sequences_from_valid_test.tsv",
    }


def read_minionerec(
    raw_root: str | Path, dataset: str
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``(items, interactions, given_sequences)`` of the MiniOneRec processed data.

    valid/test rows are the shipped CSVs exactly. The full train CSV is used when present;
    otherwise (as in ../shared) the exact partial train rows from
    ``derived/{DS}.train_recovered_partial.csv``, with a warning.
    """
    paths = minionerec_paths(raw_root, dataset)
    items = read_minionerec_items(paths["items"])
    known = set(items["item_id"])
    train_path = paths["train_full"]
    if not train_path.is_file():
        train_path = paths["train_partial"]
        logger.warning(
            "MiniOneRec full train split %s is missing; using the partial train rows "
            "recovered from the valid/test histories (%s). Results are comparable between "
            "methods trained on it, not with the paper's absolute numbers.",
            paths["train_full"], train_path,
        )
    parts = []
    next_timestamp = 0
    for split, path in (("train", train_path), ("valid", paths["valid"]), ("test", paths["test"])):
        rows = read_minionerec_sequences(path, known, first_timestamp=next_timestamp)
        next_timestamp += len(rows)
        rows["split"] = split
        parts.append(rows)
        logger.info("minionerec %s %s: %d rows from %s", dataset, split, len(rows), path)
    given = pd.concat(parts, ignore_index=True)
    interactions = read_minionerec_interactions(paths["sequences"], known)
    return items, interactions, given


# --------------------------------------------------------------------------- registry


def _amazon_locate(version: str):
    def locate(root: Path, dataset: str, files, options) -> dict[str, Path]:
        return amazon_dump_paths(root, dataset, version, files.get("reviews"), files.get("meta"))
    return locate


def _read_amazon(request: ReadRequest) -> SourceTables:
    files = request.files
    items, interactions = read_amazon_dump(
        request.root, request.dataset, version=request.source, skip_bad_lines=request.skip_bad_lines,
        reviews_file=str(files["reviews"].resolve()), meta_file=str(files["meta"].resolve()),
    )
    return SourceTables(items, interactions, empty_given_sequences())


for _version, _summary in (("amazon2018", "Amazon Review Data 2018: {dataset}_5.json[.gz] + meta_{dataset}.json[.gz]"),
                           ("amazon2023", "Amazon Reviews 2023: {dataset}.jsonl[.gz] + meta_{dataset}.jsonl[.gz]")):
    register_source(_version, locate=_amazon_locate(_version), file_keys=("reviews", "meta"),
                    needs_dataset=True, summary=_summary)(_read_amazon)


def _minionerec_locate(root: Path, dataset: str, files, options) -> dict[str, Path]:
    paths = minionerec_paths(root, dataset)
    train = paths.pop("train_full")
    partial = paths.pop("train_partial")
    paths["train"] = train if train.is_file() else partial
    for name, path in paths.items():
        if not path.is_file():
            raise DataFormatError(f"{path}: missing minionerec file ({name}) under raw_root {root}")
    return paths


@register_source("minionerec", locate=_minionerec_locate, needs_dataset=True,
                 summary="MiniOneRec's processed data: item.json + its train/valid/test CSVs (kept row for row)")
def _read_minionerec(request: ReadRequest) -> SourceTables:
    return SourceTables(*read_minionerec(request.root, request.dataset))


@register_source("synthetic", summary="the seeded demo, generated in memory (ingest.synthetic)")
def _read_synthetic(request: ReadRequest) -> SourceTables:
    items, interactions = read_synthetic(int(request.seed), skip_bad_lines=request.skip_bad_lines,
                                         **request.params.get("synthetic", {}))
    return SourceTables(items, interactions, empty_given_sequences())
