"""The RL nodes: check the configuration, hand file paths to the training process, plot its rewards and curves."""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from singer_rec import modeling
from singer_rec.curves import curves_figure, rl_curves
from singer_rec.params import from_params, nested_defaults, rule
from singer_rec.rl.report import reward_distribution_figure, summary_report
from singer_rec.training import common, rl
from singer_rec.training.launch import Rendezvous
from singer_rec.training.rl.settings import RLSettings, check_catalog_size
from singer_rec.training.workdirs import RunFolder

logger = logging.getLogger(__name__)

ENTRY_POINT = "singer_rec.training.rl"
START_FROM = ("sft", "base")


@dataclass
class RLParams:
    """The ``rl`` parameter block, checked when a run starts (``singer_rec.params``)."""

    settings: RLSettings = field(default_factory=RLSettings)
    num_processes: int = field(default=1, metadata=rule(ge=1))
    device: str = "auto"
    work_dir: str = "data/06_models/rl_work"
    resume: bool = True
    keep_finished_runs: int = field(default=2, metadata=rule(ge=0))
    keep_checkpoints: int = field(default=2, metadata=rule(ge=1))
    start_from: str = field(default="sft", metadata=rule(choices=START_FROM))
    base_model: dict[str, Any] | None = None  # the RL-only variant's preset (same keys as sft.model)
    torchrun: Rendezvous | None = None  # several machines, as sft.torchrun (docs/architecture.md); null: this one

    def check(self, where: str) -> None:
        common.check_device_name(self.device, f"{where}.device")
        if self.start_from == "base":
            modeling.check_model_config(self.base_model or {})


def check_rl_params(params: dict[str, Any] | RLParams, seed: int, num_items: int) -> RLParams:
    """The typed ``rl`` block (the global ``seed`` unless ``settings`` sets its own), validated before any
    training, ``num_generations`` against a catalogue of ``num_items`` items too."""
    params = from_params(RLParams, nested_defaults(params, "settings", seed=seed), "rl")
    check_catalog_size(params.settings, num_items)
    return params


def train_rl_model(sft_model: Path, rl_dataset: pd.DataFrame, sft_dataset_valid: pd.DataFrame, items: pd.DataFrame,
                   item_sids: pd.DataFrame, params: dict[str, Any] | RLParams, prompts: dict[str, Any],
                   seed: int) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """GRPO in a child process; returns (RL model folder, scalar report, per-step history + probe rewards
    + valid curve).

    ``sft_dataset_valid``: the rows ranked every ``settings.valid_every`` steps (the same seeded
    sample of SID-answer rows that selects the SFT model); ``settings.select: valid`` keeps the best.

    ``params.start_from``: ``sft`` starts from (and regularises towards) ``sft_model``; ``base`` is
    the RL-only variant: a fresh ``params.base_model`` preset with the catalog's SID tokens. A
    rerun with the same inputs resumes from the last checkpoint in ``params.work_dir``.
    """
    params = check_rl_params(params, seed, len(modeling.read_meta(sft_model)["sid_map"]))
    config = {"rl": asdict(params.settings), "start_from": params.start_from, "device": params.device}
    if params.start_from == "base":
        config["base_model"] = params.base_model
    ranks_valid = params.settings.valid_every > 0  # the valid rows shape the run only when they are ranked
    frames = {"rl_dataset": rl_dataset, "item_sids": item_sids}
    if ranks_valid:
        frames["sft_dataset_valid"] = sft_dataset_valid
    folder = RunFolder.prepare(params.work_dir, {**config, "sft_model": str(sft_model)}, frames,
                               resume=params.resume, keep_finished_runs=params.keep_finished_runs)
    inputs = folder.write_inputs({name: frame for name, frame in frames.items() if name != "item_sids"})  # hashed only
    start = Path(sft_model)
    if params.start_from == "base":
        start = folder.path / "base_model"
        if not (start / modeling.META_FILE).is_file():
            rl.build_base_model_folder(params.base_model, items, item_sids, prompts["templates"], seed, start)
    config.update({
        "model_path": str(start.resolve()),
        "reference_path": str(start.resolve()),
        "dataset_path": inputs["rl_dataset"],
        "valid_path": inputs.get("sft_dataset_valid"),  # None: no valid ranking
        **folder.outputs("output_path"),
        "keep_checkpoints": params.keep_checkpoints,
    })
    output, result_path = Path(config["output_path"]), Path(config["result_path"])
    if (output / modeling.META_FILE).is_file() and result_path.is_file():
        # a finished run that no catalog dataset has taken yet (the ablations keep theirs here)
        logger.info("RL run folder %s is complete: reusing its model", folder.path)
        result = json.loads(result_path.read_text(encoding="utf-8"))
        folder.finish()
    else:
        logger.info("RL run folder %s (%d rl_dataset rows, start: %s)", folder.path, len(rl_dataset), start)
        result = folder.run(ENTRY_POINT, config, params.num_processes, params.torchrun)
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
