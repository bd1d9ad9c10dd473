"""Score another system's ranked predictions on this project's test split: ``singer-score-predictions``.

    singer-score-predictions --predictions results/Industrial.json --format minionerec \\
        --item-sids /path/to/minionerec/index/Industrial_and_Scientific.index.json \\
        --env industrial --ours rl [--name MiniOneRec] [--out comparison.json]

Two input formats:

* ``minionerec``: the result JSON MiniOneRec's ``evaluate.py`` writes, a list with one record per
  row of the test CSV, in its order, each with ``output`` (the target SID, e.g.
  ``"<a_12><b_3><c_7>\\n"``) and ``predict`` (the ranked SID strings, best first). Record ``i`` is
  test row ``i``; its target SID must map to test row ``i``'s target item.
* ``table`` (CSV, Parquet or JSON Lines, by suffix): one row per test row, with ``row`` (0-based
  index into the test split; without it the rows are taken in test-split order) and
  ``ranked_items`` (item ids, best first) or ``ranked_sids`` (SID strings); a list in JSON Lines /
  Parquet, or ids separated by spaces (or ``|``) in CSV. Optional ``user_id`` and ``target``
  columns are checked against the test row.

SIDs become items through an item_sids table: this project's ``item_sids.parquet`` (``item_id``,
``sid``), any CSV / JSON Lines with those columns, or MiniOneRec's ``index.json`` (``{item_id:
[tokens]}``). A SID shared by several items (a collision the other system left unresolved) stands
for all of them, in the table's order; a SID the table does not know fills its rank with no item.
Repeated items keep their first rank. Metrics are item-level HR@K and NDCG@K
(:mod:`singer_rec.metrics`), on the test rows both systems predicted; against one of our models
(its ``test_predictions.parquet``, from the evaluate stage) each metric gets ours − theirs with a
95% paired-bootstrap interval (:func:`singer_rec.metrics.paired_bootstrap`). A row that does not
align (wrong target, wrong user, a row index out of range or given twice, more records than test
rows) is an error naming the file and line.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from singer_rec.metrics import DEFAULT_KS, hit_rank, metrics_from_ranks, paired_bootstrap

logger = logging.getLogger(__name__)

FORMATS = ("minionerec", "table")


class AlignmentError(ValueError):
    """Predictions that cannot be read or matched to the test split; the message names file and line."""


@dataclass
class Aligned:
    """Ranked item ids per test row (row index -> list; ``None`` = a prediction that names no item)."""

    ranked: dict[int, list[str | None]] = field(default_factory=dict)
    unknown_sids: int = 0           # predicted SIDs the item_sids table does not know
    ambiguous_sids: int = 0         # predicted SIDs that stand for several items


# --------------------------------------------------------------------------- inputs


def latest_version(path: str | Path) -> Path:
    """A Kedro-versioned dataset's newest file (``x.parquet/<version>/x.parquet``), else ``path``."""
    path = Path(path)
    if path.is_dir():
        versions = sorted(p for p in path.iterdir() if (p / path.name).is_file())
        if versions:
            return versions[-1] / path.name
    return path


def _read_frame(path: Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    name = path.name.lower()
    if name.endswith(".parquet"):
        frame = pd.read_parquet(path, columns=list(columns) if columns else None)
    elif name.endswith((".csv", ".csv.gz")):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    elif name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        frame = pd.read_json(path, lines=True, dtype=False)
    else:
        raise AlignmentError(f"{path}: unsupported file type (use .parquet, .csv or .jsonl)")
    return frame


def read_test_split(path: str | Path) -> pd.DataFrame:
    """``test_sequences`` (user_id, history, target), rows as the split stage wrote them."""
    path = latest_version(path)
    if not path.is_file():
        raise AlignmentError(f"{path}: test split not found (run the split stage, or pass --test)")
    frame = _read_frame(path)
    missing = [c for c in ("user_id", "target") if c not in frame.columns]
    if missing:
        raise AlignmentError(f"{path}: missing column(s) {missing}; expected the split stage's test_sequences")
    return frame.assign(user_id=frame["user_id"].astype(str), target=frame["target"].astype(str)).reset_index(drop=True)


def read_item_sids(path: str | Path) -> dict[str, list[str]]:
    """SID string -> item ids (several for a colliding SID, in the table's order)."""
    path = latest_version(path)
    if not path.is_file():
        raise AlignmentError(f"{path}: item_sids table not found")
    pairs: list[tuple[str, str]] = []
    if path.name.lower().endswith(".json"):
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise AlignmentError(f"{path}:{error.lineno}: malformed JSON: {error.msg}") from None
        if not isinstance(document, dict):
            raise AlignmentError(f"{path}: expected an object {{item_id: [SID tokens] or SID}}")
        for item, sid in document.items():
            if isinstance(sid, list) and all(isinstance(t, str) for t in sid):
                sid = "".join(sid)
            if not isinstance(sid, str):
                raise AlignmentError(f"{path}: item {item!r}: expected a list of SID tokens or a SID string")
            pairs.append((str(item), sid))
    else:
        frame = _read_frame(path)
        missing = [c for c in ("item_id", "sid") if c not in frame.columns]
        if missing:
            raise AlignmentError(f"{path}: missing column(s) {missing}; expected item_id and sid")
        pairs = list(zip(frame["item_id"].astype(str), frame["sid"].astype(str)))
    table: dict[str, list[str]] = {}
    for item, sid in pairs:
        table.setdefault(sid.strip(), []).append(item)
    if not table:
        raise AlignmentError(f"{path}: empty item_sids table")
    return table


def _json_list_records(path: Path) -> Iterator[tuple[int, Any]]:
    """``(line, element)`` of every element of a JSON list file (line where the element starts)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise AlignmentError(f"{path}: not valid UTF-8 ({error.reason} at byte {error.start})") from None
    decoder = json.JSONDecoder()
    n = len(text)
    position, line = 0, 1

    def skip(pos: int) -> int:
        while pos < n and text[pos] in " \t\r\n":
            pos += 1
        return pos

    def advance(to: int) -> None:
        nonlocal position, line
        line += text.count("\n", position, to)
        position = to

    advance(skip(0))
    if position >= n or text[position] != "[":
        raise AlignmentError(f"{path}:{line}: expected a JSON list of records (MiniOneRec's result file)")
    advance(skip(position + 1))
    if position < n and text[position] == "]":
        return
    while True:
        try:
            element, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            raise AlignmentError(f"{path}:{error.lineno}: malformed JSON: {error.msg}") from None
        yield line, element
        advance(skip(end))
        if position < n and text[position] == ",":
            advance(skip(position + 1))
            continue
        if position < n and text[position] == "]":
            return
        raise AlignmentError(f"{path}:{line}: expected ',' or ']' after a record")


def _clean_sid(value: Any) -> str:
    return str(value).strip(" \n\"")   # as MiniOneRec's own scoring strips its outputs


def _items_of_sids(sids: Sequence[Any], sid_items: dict[str, list[str]], aligned: Aligned) -> list[str | None]:
    ranked: list[str | None] = []
    seen: set[str] = set()
    for sid in sids:
        items = sid_items.get(_clean_sid(sid))
        if items is None:
            aligned.unknown_sids += 1
            ranked.append(None)
            continue
        if len(items) > 1:
            aligned.ambiguous_sids += 1
        for item in items:
            if item not in seen:
                seen.add(item)
                ranked.append(item)
    return ranked


def _dedupe(items: Sequence[Any]) -> list[str | None]:
    ranked, seen = [], set()
    for item in items:
        item = str(item).strip()
        if item and item not in seen:
            seen.add(item)
            ranked.append(item)
    return ranked


def _describe_row(test: pd.DataFrame, row: int) -> str:
    return f"test row {row} (user {test['user_id'].iat[row]!r}, target {test['target'].iat[row]!r})"


def read_minionerec_results(path: str | Path, test: pd.DataFrame, sid_items: dict[str, list[str]]) -> Aligned:
    """MiniOneRec's result JSON aligned with ``test`` row for row (record ``i`` = test row ``i``)."""
    path = Path(path)
    if not path.is_file():
        raise AlignmentError(f"{path}: predictions file not found")
    aligned = Aligned()
    for index, (line, record) in enumerate(_json_list_records(path)):
        where = f"{path}:{line} (record {index})"
        if index >= len(test):
            raise AlignmentError(f"{where}: more records than the {len(test)} test rows; "
                                 "were the predictions made on another split?")
        if not isinstance(record, dict):
            raise AlignmentError(f"{where}: expected an object, got {type(record).__name__}")
        for name in ("output", "predict"):
            if name not in record:
                raise AlignmentError(f"{where}: missing field '{name}'")
        predict = record["predict"]
        if not isinstance(predict, list) or not all(isinstance(p, str) for p in predict):
            raise AlignmentError(f"{where}: field 'predict' must be a list of SID strings")
        target_sid = _clean_sid(record["output"])
        target_items = sid_items.get(target_sid)
        if target_items is None:
            raise AlignmentError(f"{where}: field 'output': target SID {target_sid!r} is not in the item_sids "
                                 "table; is it the table the predictions were made with?")
        if test["target"].iat[index] not in target_items:
            raise AlignmentError(f"{where}: field 'output': target SID {target_sid!r} is item(s) {target_items}, "
                                 f"but {_describe_row(test, index)} does not match; the records must be the test "
                                 "split's rows in order, with the item_sids table they were made with")
        aligned.ranked[index] = _items_of_sids(predict, sid_items, aligned)
    if not aligned.ranked:
        raise AlignmentError(f"{path}: no records")
    return aligned


def _as_list(value: Any, where: str, name: str) -> list:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                raise AlignmentError(f"{where}: field '{name}' is not a JSON list: {text[:60]!r}") from None
            if isinstance(parsed, list):
                return parsed
        return text.replace("|", " ").replace(",", " ").split()
    raise AlignmentError(f"{where}: field '{name}' must be a list of ids, got {value!r}")


def read_prediction_table(path: str | Path, test: pd.DataFrame,
                          sid_items: dict[str, list[str]] | None = None) -> Aligned:
    """A table of ranked predictions (``row`` or test-split order; ``ranked_items`` or ``ranked_sids``)."""
    from singer_rec.data.source_custom import table_rows
    from singer_rec.data.sources import DataFormatError, IngestReport

    path = Path(path)
    aligned = Aligned()
    first_line: dict[int, str] = {}
    try:
        for position, (where, record) in enumerate(table_rows(path, (), IngestReport())):
            if "ranked_items" in record and record["ranked_items"] is not None:
                ranked = _dedupe(_as_list(record["ranked_items"], where, "ranked_items"))
            elif "ranked_sids" in record and record["ranked_sids"] is not None:
                if sid_items is None:
                    raise AlignmentError(f"{where}: field 'ranked_sids' needs an item_sids table (--item-sids)")
                ranked = _items_of_sids(_as_list(record["ranked_sids"], where, "ranked_sids"), sid_items, aligned)
            else:
                raise AlignmentError(f"{where}: missing field 'ranked_items' (or 'ranked_sids')")
            if record.get("row") not in (None, ""):
                value = record["row"]
                try:
                    row = int(value)
                    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                        raise ValueError
                except (TypeError, ValueError):
                    raise AlignmentError(f"{where}: field 'row' must be an integer index, got {value!r}") from None
                if not 0 <= row < len(test):
                    raise AlignmentError(f"{where}: field 'row': {row} is outside the test split (rows 0-{len(test) - 1})")
            else:
                row = position
                if row >= len(test):
                    raise AlignmentError(f"{where}: more rows than the {len(test)} test rows (give a 'row' column?)")
            if row in first_line:
                raise AlignmentError(f"{where}: test row {row} is given twice (first at {first_line[row]})")
            for name in ("user_id", "target"):
                given = record.get(name)
                if given not in (None, "") and str(given).strip() != test[name].iat[row]:
                    raise AlignmentError(f"{where}: field '{name}' is {str(given).strip()!r}, but {_describe_row(test, row)} "
                                         "does not match; rows must be the test split's (in order, or by 'row')")
            first_line[row] = where
            aligned.ranked[row] = ranked
    except DataFormatError as error:
        raise AlignmentError(str(error)) from None
    return aligned


def read_our_predictions(path: str | Path, test: pd.DataFrame) -> Aligned:
    """Our evaluate stage's ``test_predictions`` (the first n test rows, in order), checked row by row."""
    path = latest_version(path)
    if not path.is_file():
        raise AlignmentError(f"{path}: our predictions not found (run the evaluate stage, or pass a file)")
    frame = pd.read_parquet(path, columns=["user_id", "target", "ranked_items"])
    if len(frame) > len(test):
        raise AlignmentError(f"{path}: {len(frame)} rows, but the test split has {len(test)}")
    aligned = Aligned()
    for row, (user, target, items) in enumerate(zip(frame["user_id"], frame["target"], frame["ranked_items"])):
        if str(user) != test["user_id"].iat[row] or str(target) != test["target"].iat[row]:
            raise AlignmentError(f"{path}: row {row} is user {str(user)!r}, target {str(target)!r}, but "
                                 f"{_describe_row(test, row)} differs; was it made on another split?")
        aligned.ranked[row] = [str(i) for i in items]
    return aligned


# --------------------------------------------------------------------------- scoring


def _ranks(aligned: Aligned, rows: Sequence[int], test: pd.DataFrame) -> list[int | None]:
    return [hit_rank(aligned.ranked[r], test["target"].iat[r]) for r in rows]


def score(test: pd.DataFrame, theirs: Aligned, ours: Aligned | None = None, ks: Sequence[int] = DEFAULT_KS,
          resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Item-level metrics of ``theirs`` (and ``ours``) on the rows both cover, and ours − theirs per metric."""
    rows = sorted(theirs.ranked if ours is None else set(theirs.ranked) & set(ours.ranked))
    if not rows:
        raise AlignmentError("the two prediction sets share no test row")
    names = [f"{name}@{k}" for k in ks for name in ("HR", "NDCG")]
    their_ranks = _ranks(theirs, rows, test)
    result: dict[str, Any] = {
        "test_rows": len(test), "rows_scored": len(rows), "ks": list(ks),
        "external": metrics_from_ranks(their_ranks, ks),
        "external_unknown_sids": theirs.unknown_sids, "external_ambiguous_sids": theirs.ambiguous_sids,
    }
    if ours is not None:
        our_ranks = _ranks(ours, rows, test)
        result["ours"] = metrics_from_ranks(our_ranks, ks)
        result["ours_minus_external"] = {
            name: paired_bootstrap(their_ranks, our_ranks, name, resamples=resamples, seed=seed) for name in names}
        result.update(resamples=resamples, seed=seed)
    return result


def markdown(result: dict[str, Any], name: str = "external", ours_name: str = "ours") -> str:
    """The result as a markdown table (one row per metric)."""
    names = [f"{m}@{k}" for k in result["ks"] for m in ("HR", "NDCG")]
    lines = [f"Test rows scored: {result['rows_scored']} of {result['test_rows']}; item-level metrics."]
    if result["external_unknown_sids"] or result["external_ambiguous_sids"]:
        lines.append(f"{name}: {result['external_unknown_sids']} predicted SIDs name no item, "
                     f"{result['external_ambiguous_sids']} stand for several items.")
    if "ours" in result:
        lines += ["", f"| metric | {name} | {ours_name} | {ours_name} − {name} | 95% CI | rows up / down |",
                  "|---|---|---|---|---|---|"]
        for metric in names:
            d = result["ours_minus_external"][metric]
            lines.append(f"| {metric} | {result['external'][metric]:.4f} | {result['ours'][metric]:.4f} | "
                         f"{d['mean']:+.4f} | [{d['ci95_low']:+.4f}, {d['ci95_high']:+.4f}] | "
                         f"{d['rows_up']} / {d['rows_down']} |")
        lines.append("")
        lines.append(f"Paired bootstrap over test rows ({result['resamples']} resamples, seed {result['seed']}).")
    else:
        lines += ["", f"| metric | {name} |", "|---|---|"]
        lines += [f"| {metric} | {result['external'][metric]:.4f} |" for metric in names]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- command


def _env_paths(env: str, conf_source: str) -> Path:
    from kedro.config import OmegaConfigLoader

    from singer_rec.settings import CONFIG_LOADER_ARGS

    return Path(OmegaConfigLoader(conf_source, env=env, **CONFIG_LOADER_ARGS)["globals"]["data_root"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="singer-score-predictions",
        description="Score another system's ranked predictions on this project's test split (item-level HR/NDCG@K), "
                    "optionally against one of our models with paired-bootstrap intervals.")
    parser.add_argument("--predictions", required=True, help="the other system's predictions file")
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="minionerec (its result JSON) or table (CSV/Parquet/JSONL); default: by suffix (.json = minionerec)")
    parser.add_argument("--item-sids", default=None,
                        help="SID -> item table the predictions were made with: item_sids.parquet, a CSV/JSONL with "
                             "item_id,sid, or MiniOneRec's index.json (default with --env: the environment's item_sids)")
    parser.add_argument("--env", default=None, help="take --test, --item-sids and --ours paths from this environment's data_root")
    parser.add_argument("--conf-source", default="conf", help="the conf folder for --env (default: conf)")
    parser.add_argument("--test", default=None, help="test_sequences.parquet (default with --env: <data_root>/03_primary/)")
    parser.add_argument("--ours", default=None,
                        help="our test_predictions.parquet, or with --env a model name (sft, rl) under 07_model_output")
    parser.add_argument("--name", default="external", help="the other system's name in the table")
    parser.add_argument("--ours-name", default=None, help="our model's name in the table (default: its folder's name)")
    parser.add_argument("--ks", type=int, nargs="+", default=list(DEFAULT_KS))
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="also write the result as JSON here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        data_root = _env_paths(args.env, args.conf_source) if args.env else None
        test_path = args.test or (data_root / "03_primary" / "test_sequences.parquet" if data_root else None)
        if test_path is None:
            raise AlignmentError("give --test (the split stage's test_sequences.parquet) or --env")
        sids_path = args.item_sids or (data_root / "04_feature" / "item_sids.parquet" if data_root else None)
        ours_path = args.ours
        if ours_path and data_root is not None and "/" not in ours_path and not ours_path.endswith(".parquet"):
            ours_path = data_root / "07_model_output" / ours_path / "test_predictions.parquet"
        fmt = args.format or ("minionerec" if args.predictions.lower().endswith(".json") else "table")
        if fmt == "minionerec" and sids_path is None:
            raise AlignmentError("--format minionerec needs --item-sids (the SID table its predictions use)")
        if min(args.ks) < 1 or args.resamples < 1:
            raise AlignmentError("--ks must be positive cut-offs and --resamples at least 1")

        test = read_test_split(test_path)
        sid_items = read_item_sids(sids_path) if sids_path else None
        if fmt == "minionerec":
            theirs = read_minionerec_results(args.predictions, test, sid_items)
        else:
            theirs = read_prediction_table(args.predictions, test, sid_items)
        ours = read_our_predictions(ours_path, test) if ours_path else None
        result = score(test, theirs, ours, args.ks, args.resamples, args.seed)
    except AlignmentError as error:
        print(f"singer-score-predictions: {error}", file=sys.stderr)
        return 2
    result.update(predictions=str(args.predictions), format=fmt, test=str(test_path),
                  item_sids=None if sids_path is None else str(sids_path), ours_file=None if ours_path is None else str(ours_path))
    ours_name = args.ours_name or (Path(str(ours_path)).parent.name if ours_path else "ours")
    print(markdown(result, args.name, ours_name), end="")
    if args.out:
        Path(args.out).write_text(json.dumps(_finite(result), indent=2) + "\n", encoding="utf-8")
    return 0


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


if __name__ == "__main__":
    raise SystemExit(main())
