"""The RL nodes: check the configuration, hand file paths to the training process, plot its rewards and curves."""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from singer_rec import modeling
from singer_rec.curves import curves_figure, rl_curves
from singer_rec.rl.report import reward_distribution_figure, summary_report
from singer_rec.training import common, rl
from singer_rec.training.launch import Rendezvous, run_training
from singer_rec.training.workdirs import clean_finished_runs, run_fingerprint

logger = logging.getLogger(__name__)

ENTRY_POINT = "singer_rec.training.rl"
START_FROM = ("sft", "base")


@dataclass
class RLParams:
    """The ``rl`` parameter block, checked when a run starts (``singer_rec.params``)."""

    settings: Any                   # checked by training.rl.RLSettings / validate_settings
    num_processes: int = 1
    device: str = "auto"
    work_dir: str = "data/06_models/rl_work"
    resume: bool = True
    keep_finished_runs: int = 2
    keep_checkpoints: int = 2
    start_from: str = "sft"
    base_model: Any = None          # the RL-only variant's preset (same keys as sft.model)
    torchrun: Rendezvous | None = None  # several machines, as sft.torchrun (docs/architecture.md); null: this one

    def check(self, where: str) -> None:
        common.check_device_name(self.device, f"{where}.device")
        if self.start_from not in ("sft", "base"):
            raise ValueError(f"{where}.start_from {self.start_from!r}; allowed: ['sft', 'base']")
        if self.num_processes < 1 or self.keep_checkpoints < 1 or self.keep_finished_runs < 0:
            raise ValueError(f"{where}: num_processes and keep_checkpoints must be >= 1, keep_finished_runs >= 0")
        if self.start_from == "base":
            modeling.check_model_config(self.base_model or {})
        settings = rl.RLSettings.from_dict(self.settings, f"{where}.settings")  # names the key itself
        try:
            rl.validate_settings(settings)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}.settings: {error}") from None


def check_rl_params(params: dict[str, Any], seed: int, num_items: int) -> rl.RLSettings:
    """The RL settings of ``params.settings`` (global seed unless set), validated before any training."""
    start_from = params.get("start_from", "sft")
    if start_from not in START_FROM:
        raise ValueError(f"rl.start_from must be one of {list(START_FROM)}, got {start_from!r}")
    settings = rl.RLSettings.from_dict({"seed": seed, **(params.get("settings") or {})})
    return rl.validate_settings(settings, num_items=num_items)


def train_rl_model(sft_model: Path, rl_dataset: pd.DataFrame, sft_dataset_valid: pd.DataFrame, items: pd.DataFrame,
                   item_sids: pd.DataFrame, params: dict[str, Any], prompts: dict[str, Any],
                   seed: int) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """GRPO in a child process; returns (RL model folder, scalar report, per-step history + probe rewards
    + valid curve).

    ``sft_dataset_valid``: the rows ranked every ``settings.valid_every`` steps (the same seeded
    sample of SID-answer rows that selects the SFT model); ``settings.select: valid`` keeps the best.

    ``params.start_from``: ``sft`` starts from (and regularises towards) ``sft_model``; ``base`` is
    the RL-only variant: a fresh ``params.base_model`` preset with the catalog's SID tokens. A
    rerun with the same inputs resumes from the last checkpoint in ``params.work_dir``.
    """
    meta = modeling.read_meta(sft_model)
    settings = check_rl_params(params, seed, len(meta["sid_map"]))
    config = {"rl": asdict(settings), "start_from": params.get("start_from", "sft"), "device": params.get("device", "auto")}
    if config["start_from"] == "base":
        modeling.check_model_config(params["base_model"])
        config["base_model"] = params["base_model"]
    ranks_valid = settings.valid_every > 0  # the valid rows shape the run only when they are ranked
    frames = {"rl_dataset": rl_dataset, "item_sids": item_sids}
    if ranks_valid:
        frames["sft_dataset_valid"] = sft_dataset_valid
    run_dir = Path(params["work_dir"]) / run_fingerprint({**config, "sft_model": str(sft_model)}, frames)
    if not params.get("resume", True):
        shutil.rmtree(run_dir, ignore_errors=True)
    clean_finished_runs(params["work_dir"], params.get("keep_finished_runs", 2), current=run_dir)
    (run_dir / "inputs").mkdir(parents=True, exist_ok=True)
    dataset_path = run_dir / "inputs" / "rl_dataset.parquet"
    rl_dataset.to_parquet(dataset_path, index=False)
    valid_path = run_dir / "inputs" / "sft_dataset_valid.parquet"
    if ranks_valid:
        sft_dataset_valid.to_parquet(valid_path, index=False)
    start = Path(sft_model)
    if config["start_from"] == "base":
        start = run_dir / "base_model"
        if not (start / modeling.META_FILE).is_file():
            rl.build_base_model_folder(params["base_model"], items, item_sids, prompts["templates"], seed, start)
    config.update({
        "model_path": str(start.resolve()),
        "reference_path": str(start.resolve()),
        "dataset_path": str(dataset_path.resolve()),
        "valid_path": str(valid_path.resolve()) if ranks_valid else None,
        "output_path": str((run_dir / "model").resolve()),
        "checkpoint_dir": str((run_dir / "checkpoints").resolve()),
        "result_path": str((run_dir / "result.json").resolve()),
        "keep_checkpoints": int(params.get("keep_checkpoints", 2)),
    })
    output, result_path = Path(config["output_path"]), Path(config["result_path"])
    if (output / modeling.META_FILE).is_file() and result_path.is_file():
        # a finished run that no catalog dataset has taken yet (the ablations keep theirs here)
        logger.info("RL run folder %s is complete: reusing its model", run_dir)
        result = json.loads(result_path.read_text(encoding="utf-8"))
    else:
        logger.info("RL run folder %s (%d rl_dataset rows, start: %s)", run_dir, len(rl_dataset), start)
        result = run_training(ENTRY_POINT, config, int(params.get("num_processes", 1)), rendezvous=params.get("torchrun"))
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    shutil.rmtree(run_dir / "inputs", ignore_errors=True)
    return config["output_path"], summary_report(result), {
        "history": result["history"], "probe": result["probe"], "reward_variant": config["rl"]["reward"],
        "valid_curve": result.get("valid_curve", []), "selected_step": result.get("selected_step"),
    }


def plot_reward_distribution(rl_history: dict[str, Any]):
    """Histogram of the rollout rewards of the probe prompts before and after RL (paper Fig. 1b)."""
    return reward_distribution_figure(rl_history["probe"], rl_history.get("reward_variant", ""))


def plot_training_curves(rl_history: dict[str, Any]):
    """Mean rollout reward, hit rate and KL at each optimiser step of the RL run, and valid HR/NDCG@10
    at each ranked step when the run ranked valid."""
    return curves_figure(rl_curves(rl_history["history"], rl_history.get("valid_curve")), title="RL: per step")
