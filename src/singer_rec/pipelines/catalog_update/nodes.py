"""Thin nodes around ``singer_rec.sid.assign`` and ``singer_rec.modeling.add_items_to_model_folder``.

New items -> checked (nothing is written when one is bad) -> embedded with the embed stage's node
and parameters -> SIDs from the trained ``sid_codebooks`` (old items keep theirs) -> a new version of
each model folder that exists (``sft_model``, ``rl_model``) whose sid_map, titles and tokenizer
include them -> the catalogue tables (``items``, ``item_sids``, ``item_embeddings``) with them
appended, and a report. Every output is saved by the last node, after every model folder is done.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from singer_rec import modeling
from singer_rec.data.sources import ITEM_COLUMNS, is_usable_title
from singer_rec.params import from_params, rule
from singer_rec.pipelines.embed.nodes import embed_items
from singer_rec.sid.assign import assign_sids

logger = logging.getLogger(__name__)

MODELS = ("sft_model", "rl_model")
MAX_LISTED_PROBLEMS = 10


@dataclass
class CatalogUpdateParams:
    """``params:catalog_update`` (the new-items file is the runtime parameter ``new_items_path``)."""

    work_dir: str = "data/06_models/catalog_update_work"   # updated model folders are written here first
    max_level_overflow: int | None = field(default=None, metadata=rule(ge=0))  # fail when a code grows more than this above its balanced size


class NewItemsError(ValueError):
    """Bad new items: the message names the file, the row and the field of every problem found."""


def check_new_items(new_items: pd.DataFrame, items: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    """The new items as an ``items`` table, or one ``NewItemsError`` listing every bad row.

    A row is bad when its ``item_id`` or ``title`` is missing (or the title has no usable text),
    when its id repeats an earlier row's, or when the id is already in the catalogue.
    """
    from_params(CatalogUpdateParams, params, "catalog_update")
    where = new_items["where"].tolist() if "where" in new_items.columns else [f"new_items row {i}" for i in range(len(new_items))]
    known = set(items["item_id"].astype(str))
    first_row: dict[str, str] = {}
    problems = []
    for location, item_id, title in zip(where, new_items["item_id"], new_items["title"]):
        item_id = "" if item_id is None or (isinstance(item_id, float) and np.isnan(item_id)) else str(item_id).strip()
        if not item_id:
            problems.append(f"{location}: field 'item_id' is missing")
            continue
        if item_id in first_row:
            problems.append(f"{location}: field 'item_id' {item_id!r} repeats {first_row[item_id]}")
        elif item_id in known:
            problems.append(f"{location}: field 'item_id' {item_id!r} is already in the catalogue (items)")
        first_row.setdefault(item_id, location)
        if not isinstance(title, str) or not is_usable_title(title):
            problems.append(f"{location}: field 'title' is missing or has no usable text (item {item_id!r})")
    if problems:
        more = f" (and {len(problems) - MAX_LISTED_PROBLEMS} more)" if len(problems) > MAX_LISTED_PROBLEMS else ""
        raise NewItemsError(f"catalog_update: {len(problems)} bad new item(s), nothing written: "
                            + "; ".join(problems[:MAX_LISTED_PROBLEMS]) + more)
    table = new_items.copy()
    for column in ITEM_COLUMNS:
        if column not in table.columns:
            table[column] = [[] for _ in range(len(table))] if column == "categories" else ""
    table["item_id"] = table["item_id"].astype(str).str.strip()
    extra = [c for c in items.columns if c not in table.columns]
    for column in extra:  # columns of the catalogue the new items do not have
        table[column] = None
    return table[[c for c in items.columns] if set(ITEM_COLUMNS) <= set(items.columns) else ITEM_COLUMNS].reset_index(drop=True)


def embed_new_items(new_items: pd.DataFrame, embed_params: dict[str, Any]) -> np.ndarray:
    """The new items' vectors from the encoder the catalogue was embedded with (the embed stage's node)."""
    return embed_items(new_items, embed_params)


def assign_new_items(new_items: pd.DataFrame, new_embeddings: np.ndarray, items: pd.DataFrame,
                     item_sids: pd.DataFrame, sid_codebooks: np.ndarray,
                     params: dict[str, Any] | None = None) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """``(items, item_sids, report)`` with the new items appended; old rows are unchanged."""
    config = from_params(CatalogUpdateParams, params or {}, "catalog_update")
    if set(item_sids["item_id"].astype(str)) != set(items["item_id"].astype(str)):
        raise ValueError("catalog_update: item_sids and items hold different items; rerun the sid stage first")
    assignment = assign_sids(new_embeddings, sid_codebooks, item_sids["sid"].astype(str).tolist())
    report = assignment.report
    worst = max(level["max_overflow"] for level in report["levels"].values())
    if config.max_level_overflow is not None and worst > config.max_level_overflow:
        raise ValueError(f"catalog_update: a code would hold {worst} items above its balanced size "
                         f"(catalog_update.max_level_overflow = {config.max_level_overflow}); rebuild the SIDs "
                         "(the sid stage) and retrain instead")
    new_sids = pd.DataFrame({"item_id": new_items["item_id"].astype(str).tolist(), "sid": assignment.sids,
                             "codes": assignment.sid_codes})
    sids = pd.concat([item_sids, new_sids[list(item_sids.columns)]], ignore_index=True)
    updated_items = pd.concat([items, new_items[list(items.columns)]], ignore_index=True)
    report = {**report, "new_sids": dict(zip(new_sids["item_id"], new_sids["sid"]))}
    logger.info("catalog_update: %d new items; %d with a suffix; new tokens %s", len(new_sids),
                report["collisions"]["new_items_with_suffix"], report["new_tokens"] or "none")
    return updated_items, sids, report


def update_model_folder(model_folder: Path | None, new_items: pd.DataFrame, item_sids: pd.DataFrame,
                        target: str | Path, note: dict[str, Any] | None = None) -> str:
    """A new model folder at ``target`` that knows the new items (``""`` when there is no model folder)."""
    if model_folder is None:
        return ""
    new_ids = new_items["item_id"].astype(str).tolist()
    sid_of = dict(zip(item_sids["item_id"].astype(str), item_sids["sid"].astype(str)))
    titles = dict(zip(new_ids, new_items["title"].astype(str)))
    entry = modeling.add_items_to_model_folder(model_folder, {i: sid_of[i] for i in new_ids}, titles, target,
                                               note={**(note or {}), "source_folder": str(model_folder)})
    logger.info("catalog_update: %s -> %s (%d new items, new tokens %s)", model_folder, target,
                entry["new_items"], entry["new_tokens"] or "none")
    return str(target)


def update_model_folders(sft_model: Path | None, rl_model: Path | None, new_items: pd.DataFrame,
                         item_sids: pd.DataFrame, report: dict[str, Any],
                         params: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """Updated copies of the model folders that exist, written under ``work_dir`` (the datasets move them
    into place); ``""`` for a model folder that does not exist. The report gets what each folder gained."""
    config = from_params(CatalogUpdateParams, params, "catalog_update")
    work = Path(config.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="update-", dir=work))
    folders, models = {}, {}
    try:
        for name, folder in zip(MODELS, (sft_model, rl_model)):
            folders[name] = update_model_folder(folder, new_items, item_sids, run_dir / name)
            if folders[name]:
                models[name] = modeling.read_meta(folders[name])["catalog_updates"][-1]
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    if not models:
        logger.warning("catalog_update: no model folder (sft_model, rl_model) yet: only the catalogue tables change")
    return folders["sft_model"], folders["rl_model"], {**report, "models": models}


def publish(items: pd.DataFrame, item_sids: pd.DataFrame, item_embeddings: np.ndarray, new_embeddings: np.ndarray,
            sft_model: str, rl_model: str, report: dict[str, Any]):
    """Every output at once, after all the work succeeded: the tables, the model folders, the report."""
    embeddings = np.concatenate([item_embeddings, new_embeddings.astype(item_embeddings.dtype)], axis=0)
    if embeddings.shape[0] != len(items):
        raise ValueError(f"catalog_update: item_embeddings has {item_embeddings.shape[0]} rows for "
                         f"{len(items) - len(new_embeddings)} old items; rerun the embed stage first")
    return sft_model, rl_model, embeddings, item_sids, report, report_markdown(report), items


def report_markdown(report: dict[str, Any]) -> str:
    """The report as a short markdown page."""
    collisions = report["collisions"]
    lines = [
        "# Catalog update", "",
        f"{report['n_new_items']} new items added to {report['n_old_items']} "
        f"({report['num_levels']} levels x {report['codebook_size']} codes); old SIDs unchanged.", "",
        "| level | balanced size max | size max after | max overflow | codes over | codes that got new items |",
        "|---|---|---|---|---|---|",
    ]
    for name, level in report["levels"].items():
        lines.append(f"| {name.split('_')[1]} | {level['balanced_size_max']} | {level['size_max_after']} | "
                     f"{level['max_overflow']} | {level['codes_over']} | {level['codes_receiving_new_items']} |")
    lines += ["",
              f"- new items with a suffix: {collisions['new_items_with_suffix']} "
              f"(joined an old suffixed group: {collisions['joined_old_suffixed_group']}; "
              f"new groups among new items: {collisions['new_groups_among_new_items']}; "
              f"moved off a path held by an old unsuffixed item: {collisions['relocated_from_unsuffixed_old_path']})",
              f"- new SID tokens: {', '.join(report['new_tokens']) or 'none'}",
              f"- model folders updated: {', '.join(report.get('models', {})) or 'none'}", ""]
    return "\n".join(lines)
