"""The ablation runner: each variant = overrides of the RL settings (+ which SFT model it starts from),
trained with the rl stage's node function, evaluated with the evaluate stage's, one table out."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from singer_rec import modeling, tracking
from singer_rec.pipelines.evaluate.nodes import _markdown as markdown
from singer_rec.pipelines.evaluate.nodes import evaluate_test
from singer_rec.pipelines.rl.nodes import check_rl_params, train_rl_model
from singer_rec.pipelines.sft.nodes import train_sft_model
from singer_rec.training.rl import retarget_model_folder

logger = logging.getLogger(__name__)

METRICS = ["HR@3", "NDCG@3", "HR@5", "NDCG@5", "HR@10", "NDCG@10"]
SFT_ONLY = "sft-only"  # a variant without RL: the SFT model itself


def variant_settings(names: list[str], definitions: dict[str, Any], rl_params: dict[str, Any], seed: int,
                     num_items: int) -> dict[str, dict[str, Any] | None]:
    """Each named variant's full RL settings (None for ``sft-only``), all validated before any training."""
    if not names:
        raise ValueError("ablations.variants is empty")
    unknown = [n for n in names if n not in definitions]
    if unknown:
        raise ValueError(f"unknown ablation variant(s) {unknown}; defined in ablations.definitions: {sorted(definitions)}")
    resolved: dict[str, dict[str, Any] | None] = {}
    for name in names:
        overrides = definitions[name]
        if overrides is None or overrides == SFT_ONLY:
            resolved[name] = None
            continue
        settings = {**(rl_params.get("settings") or {}), **overrides}
        try:
            check_rl_params({**rl_params, "settings": settings}, seed, num_items)
        except ValueError as error:
            raise ValueError(f"ablation variant {name!r}: {error}") from None
        resolved[name] = settings
    return resolved


def _semantic_only(frame: pd.DataFrame, tasks: list[str]) -> pd.DataFrame:
    return frame[frame["task"].isin(tasks)].reset_index(drop=True)


def run_ablations(sft_model: Path, sft_dataset_train: pd.DataFrame, sft_dataset_valid: pd.DataFrame,
                  rl_dataset: pd.DataFrame, items: pd.DataFrame, item_sids: pd.DataFrame,
                  test_sequences: pd.DataFrame, ablations: dict[str, Any], rl_params: dict[str, Any],
                  sft_params: dict[str, Any], prompts: dict[str, Any], evaluate_params: dict[str, Any],
                  seed: int) -> tuple[pd.DataFrame, str]:
    """Train and evaluate every variant of ``ablations.variants``; returns (table, markdown).

    Alignment variants ``none`` and ``rl`` start from an SFT model trained on the semantic task
    only (trained here once, with the sft parameters); ``sft`` and ``full`` start from ``sft_model``.
    """
    meta = modeling.read_meta(sft_model)
    variants = variant_settings(list(ablations["variants"]), ablations["definitions"], rl_params, seed,
                                len(meta["sid_map"]))
    eval_params = {**evaluate_params, **(ablations.get("evaluate") or {})}
    work_dir = Path(ablations["work_dir"])
    sft_without_alignment: Path | None = None
    rows = []
    for name, settings in variants.items():
        started = time.perf_counter()
        report: dict[str, Any] = {}
        if settings is None:
            model, alignment = Path(sft_model), "sft"
        else:
            alignment = settings.get("alignment", "full")
            start = Path(sft_model)
            if alignment in ("none", "rl"):  # the SFT stage had no alignment tasks
                if sft_without_alignment is None:
                    tasks = list(settings.get("semantic_tasks", ["semantic"]))
                    logger.info("ablations: SFT without alignment tasks (tasks %s)", tasks)
                    path, _ = train_sft_model(
                        _semantic_only(sft_dataset_train, tasks), _semantic_only(sft_dataset_valid, tasks), items,
                        item_sids, {**sft_params, "work_dir": str(work_dir / "sft_no_alignment")}, prompts, seed)
                    sft_without_alignment = Path(path)
                start = sft_without_alignment
            params = {**rl_params, "settings": settings, "work_dir": str(work_dir / "rl")}
            path, report, _ = train_rl_model(start, rl_dataset, items, item_sids, params, prompts, seed)
            model = Path(path)
        train_seconds = time.perf_counter() - started
        started = time.perf_counter()
        _, metrics = evaluate_test(model, test_sequences, eval_params)
        row = {
            "variant": name,
            "alignment": alignment,
            "sampling": "-" if settings is None else settings.get("sampling", "beam+prefix"),
            "reward": "-" if settings is None else settings.get("reward", "full"),
            **{m: float(metrics[m]) for m in METRICS},
            "n": int(metrics["n"]),
            "rl_steps": int(report.get("steps", 0)),
            "probe_hit_rate_after": float(report.get("probe_hit_rate_after", float("nan"))),
            # the training process's own wall time (also right for a reused finished run), else this node's
            "train_seconds": round(float(report.get("wall_seconds", train_seconds)), 1),
            "eval_seconds": round(time.perf_counter() - started, 1),
        }
        rows.append(row)
        tracking.log_metrics({f"{name}.{m}": row[m] for m in METRICS})
        logger.info("ablation %s: %s", name, {m: round(row[m], 4) for m in METRICS})
    table = pd.DataFrame(rows)
    return table, markdown(table) + "\n"


def evaluate_unseen_domain(items: pd.DataFrame, item_sids: pd.DataFrame, test_sequences: pd.DataFrame,
                           unseen_domain: dict[str, Any], evaluate_params: dict[str, Any]) -> dict[str, Any]:
    """Test metrics of a model trained on another domain, on this run's domain with this domain's SIDs.

    ``unseen_domain.model_path``: the trained model folder (e.g. the Industrial ``rl_model``
    version). Left null, the study is not configured: nothing is evaluated and ``{}`` is returned.
    """
    source = unseen_domain.get("model_path")
    if not source:
        logger.warning("unseen_domain.model_path is not set: the unseen-domain evaluation is skipped")
        return {}
    source = Path(source)
    if not (source / modeling.META_FILE).is_file():  # a versioned dataset root: take its latest version
        versions = sorted(p for p in source.glob("*/*") if (p / modeling.META_FILE).is_file())
        if not versions:
            raise FileNotFoundError(f"unseen_domain.model_path {source} is neither a model folder nor a versioned one")
        source = versions[-1]
    folder = retarget_model_folder(source, items, item_sids, Path(unseen_domain["work_dir"]) / "model")
    _, metrics = evaluate_test(folder, test_sequences, {**evaluate_params, **(unseen_domain.get("evaluate") or {})})
    return {**metrics, "trained_on": str(source)}
