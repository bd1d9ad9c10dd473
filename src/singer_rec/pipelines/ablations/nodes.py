"""Ablation nodes (paper Fig. 4): each variant = overrides of the RL settings, trained and evaluated
by the rl and evaluate stages' own node functions inside the variant's namespace (see pipeline.py);
these nodes only derive a variant's parameters, pick the semantic-only SFT rows, and gather the table."""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from singer_rec import modeling
from singer_rec.metrics import METRIC_NAMES
from singer_rec.params import from_params
from singer_rec.pipelines.evaluate.nodes import evaluate_test, markdown_table
from singer_rec.pipelines.rl.nodes import RLParams, check_rl_params
from singer_rec.training.rl import retarget_model_folder
from singer_rec.training.rl.settings import SFT_ALIGNMENT, RLSettings

logger = logging.getLogger(__name__)

METRICS = list(METRIC_NAMES)
SFT_ONLY = "sft-only"
SEMANTIC_SFT = "sft-semantic"  # the semantic-only SFT model: a row of its own when it was evaluated
# the rl settings a row names (a key the settings leave out reads as RLSettings' default)
SETTING_COLUMNS = ("alignment", "sampling", "reward", "title_reward", "guide_depth")  # a variant without RL: the SFT model itself
# alignment variants whose SFT stage had no alignment tasks: they start from the semantic-only SFT model
SEMANTIC_SFT_ALIGNMENTS = tuple(name for name, in_sft in SFT_ALIGNMENT.items() if not in_sft)  # none, rl


@dataclass
class AblationsParams:
    """The ``ablations`` parameter block."""

    work_dir: str = "data/06_models/ablations_work"  # a run folder per variant below it
    evaluate: dict[str, Any] = field(default_factory=dict)  # over the evaluate parameters, for every variant
    definitions: dict[str, Any] = field(default_factory=dict)  # variant -> rl.settings overrides, or sft-only


@dataclass
class UnseenDomainParams:
    """The ``unseen_domain`` parameter block: a model trained on another domain, evaluated on this one."""

    model_path: str | None = None  # a model folder or a versioned root (its latest version); null: skipped
    work_dir: str = "data/06_models/unseen_domain"
    evaluate: dict[str, Any] = field(default_factory=dict)  # over the evaluate parameters


def is_sft_only(overrides: Any) -> bool:
    return overrides is None or overrides == SFT_ONLY


def variant_settings(names: list[str], definitions: dict[str, Any], rl_params: dict[str, Any], seed: int,
                     num_items: int) -> dict[str, dict[str, Any] | None]:
    """Each named variant's full RL settings (None for ``sft-only``), all validated before any training."""
    if not names:
        raise ValueError("ablations.definitions is empty")
    unknown = [n for n in names if n not in definitions]
    if unknown:
        raise ValueError(f"unknown ablation variant(s) {unknown}; defined in ablations.definitions: {sorted(definitions)}")
    resolved: dict[str, dict[str, Any] | None] = {}
    for name in names:
        overrides = definitions[name]
        if is_sft_only(overrides):
            resolved[name] = None
            continue
        # as given, not typed: the rl node fills in the defaults, and the global seed unless one is set here
        settings = {**(rl_params.get("settings") or {}), **overrides}
        try:
            check_rl_params({**rl_params, "settings": settings}, seed, num_items)
        except ValueError as error:
            raise ValueError(f"ablation variant {name!r}: {error}") from None
        resolved[name] = settings
    return resolved


def variant_evaluate_params(evaluate: dict[str, Any], ablations: dict[str, Any] | AblationsParams) -> dict[str, Any]:
    """The evaluate parameters of every variant: ``evaluate`` with ``ablations.evaluate`` over it."""
    return {**evaluate, **from_params(AblationsParams, ablations, "ablations").evaluate}


def check_start_model_alignment(name: str, settings: RLSettings, start_meta: dict[str, Any]) -> None:
    """A variant whose alignment puts the alignment tasks in SFT (``sft``, ``full``) must start from an
    SFT model that was trained on them; otherwise its row would be the ``none``/``rl`` cell under
    another name. Model folders written before SFT recorded its tasks are not checked."""
    tasks = (start_meta.get("train") or {}).get("tasks")
    if tasks is not None and SFT_ALIGNMENT[settings.alignment] and set(tasks) <= set(settings.semantic_tasks):
        raise ValueError(
            f"ablation variant {name!r} (rl.settings.alignment={settings.alignment!r}) puts the alignment tasks in SFT, "
            f"but its start model was trained on {sorted(tasks)} only (prompts.sft_tasks). Build the prompts and SFT with "
            f"alignment tasks in prompts.sft_tasks for this variant, or set rl.settings.alignment to 'rl' or 'none'.")


def variant_parameters_node(name: str):
    """The node function of variant ``name``: (its rl parameters, its evaluate parameters), validated."""

    def variant_parameters(start_model: Path, rl: dict[str, Any], evaluate: dict[str, Any],
                           ablations: dict[str, Any], seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
        config = from_params(AblationsParams, ablations, "ablations")
        meta = modeling.read_meta(start_model)
        settings = variant_settings([name], config.definitions, rl, seed, len(meta["sid_map"]))[name]
        check_start_model_alignment(name, RLSettings.from_dict(settings), meta)  # the dataclass's defaults
        work_dir = str(Path(config.work_dir) / name)
        logger.info("ablation %s: rl.settings %s", name, settings)
        return {**rl, "settings": settings, "work_dir": work_dir}, variant_evaluate_params(evaluate, ablations)

    variant_parameters.__qualname__ = variant_parameters.__name__
    return variant_parameters


def semantic_rows(frame: pd.DataFrame, rl: dict[str, Any] | RLParams) -> pd.DataFrame:
    """The rows of the tasks kept without alignment (``rl.settings.semantic_tasks``)."""
    tasks = from_params(RLParams, rl, "rl").settings.semantic_tasks
    return frame[frame["task"].isin(tasks)].reset_index(drop=True)


def semantic_sft_params(sft: dict[str, Any], ablations: dict[str, Any] | AblationsParams) -> dict[str, Any]:
    """The sft parameters of the semantic-only SFT model, with its own work folder (``sft`` stays as
    given: the SFT node hashes its train keys as given)."""
    work_dir = from_params(AblationsParams, ablations, "ablations").work_dir
    return {**sft, "work_dir": str(Path(work_dir) / "sft-semantic")}


def variant_row(name: str, overrides: Any, metrics: dict | None, report: dict | None,
                rl_settings: RLSettings) -> dict[str, Any]:
    """One row of the ablation table (metrics NaN and ``run`` False for a variant not run yet)."""
    if is_sft_only(overrides):
        described = {key: "-" for key in SETTING_COLUMNS} | {"alignment": "none" if name == SEMANTIC_SFT else "sft"}
    else:
        settings = RLSettings.from_dict({**asdict(rl_settings), **overrides})
        described = {key: getattr(settings, key) for key in SETTING_COLUMNS}
    report = report or {}
    return {
        "variant": name,
        **described,
        **{m: float(metrics[m]) if metrics else float("nan") for m in METRICS},
        "n": int(metrics["n"]) if metrics else 0,
        "rl_steps": int(report.get("steps", 0)),
        "probe_hit_rate_after": float(report.get("probe_hit_rate_after", float("nan"))),
        "train_seconds": round(float(report.get("wall_seconds", 0.0)), 1),  # the training process's wall time
        "run": metrics is not None,
    }


def ablation_table(ablations: dict[str, Any] | AblationsParams, rl: dict[str, Any] | RLParams,
                   **results: dict | None) -> tuple[pd.DataFrame, str]:
    """(table, markdown) over every variant of ``ablations.definitions``, from the variants' own
    ``<variant>.test_metrics`` and ``<variant>.rl_report`` (None for a variant not run yet)."""
    ablations, rl = from_params(AblationsParams, ablations, "ablations"), from_params(RLParams, rl, "rl")
    rows = [variant_row(name, overrides, results.get(f"{name}.test_metrics"), results.get(f"{name}.rl_report"),
                        rl.settings)
            for name, overrides in ablations.definitions.items()]
    if results.get(f"{SEMANTIC_SFT}.test_metrics") is not None:
        rows.append(variant_row(SEMANTIC_SFT, SFT_ONLY, results[f"{SEMANTIC_SFT}.test_metrics"], None, rl.settings))
    missing = [row["variant"] for row in rows if not row["run"]]
    if missing:
        logger.warning("ablation table: not run yet: %s (kedro run --pipelines=ablations --namespaces=...)", missing)
    table = pd.DataFrame(rows)
    return table, markdown_table(table) + "\n"


def evaluate_unseen_domain(items: pd.DataFrame, item_sids: pd.DataFrame, test_sequences: pd.DataFrame,
                           unseen_domain: dict[str, Any] | UnseenDomainParams,
                           evaluate_params: dict[str, Any]) -> dict[str, Any]:
    """Test metrics of a model trained on another domain, on this run's domain with this domain's SIDs.

    ``unseen_domain.model_path``: the trained model folder (e.g. the Industrial ``rl_model``
    version). Left null, the study is not configured: nothing is evaluated and ``{}`` is returned.
    """
    unseen_domain = from_params(UnseenDomainParams, unseen_domain, "unseen_domain")
    source = unseen_domain.model_path
    if not source:
        logger.warning("unseen_domain.model_path is not set: the unseen-domain evaluation is skipped")
        return {}
    source = Path(source)
    if not (source / modeling.META_FILE).is_file():  # a versioned dataset root: take its latest version
        versions = sorted(p for p in source.glob("*/*") if (p / modeling.META_FILE).is_file())
        if not versions:
            raise FileNotFoundError(f"unseen_domain.model_path {source} is neither a model folder nor a versioned one")
        source = versions[-1]
    folder = retarget_model_folder(source, items, item_sids, Path(unseen_domain.work_dir) / "model")
    _, metrics = evaluate_test(folder, test_sequences, {**evaluate_params, **unseen_domain.evaluate})
    return {**metrics, "trained_on": str(source)}
