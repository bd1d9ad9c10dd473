"""The SFT node: checks its inputs, hands file paths to the training process, returns its folder."""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from singer_rec import modeling
from singer_rec.curves import curves_figure, sft_curves
from singer_rec.training import sft
from singer_rec.training.launch import Rendezvous, run_training
from singer_rec.training.workdirs import clean_finished_runs, run_fingerprint

logger = logging.getLogger(__name__)

ENTRY_POINT = "singer_rec.training.sft"


@dataclass
class SFTParams:
    """The ``sft`` parameter block, checked when a run starts (``singer_rec.params``)."""

    model: Any                      # checked by modeling.check_model_config
    train: Any                      # checked by training.sft.SFTSettings
    num_processes: int = 1
    work_dir: str = "data/06_models/sft_work"
    resume: bool = True
    keep_finished_runs: int = 2
    torchrun: Rendezvous | None = None  # several machines (docs/architecture.md); null: this one

    def check(self, where: str) -> None:
        if self.num_processes < 1 or self.keep_finished_runs < 0:
            raise ValueError(f"{where}: num_processes must be >= 1 and keep_finished_runs >= 0, got "
                             f"{self.num_processes} and {self.keep_finished_runs}")
        modeling.check_model_config(self.model)
        sft.SFTSettings.from_dict(self.train, f"{where}.train")


def train_sft_model(sft_dataset_train: pd.DataFrame, sft_dataset_valid: pd.DataFrame, items: pd.DataFrame,
                    item_sids: pd.DataFrame, params: dict[str, Any], prompts: dict[str, Any],
                    seed: int) -> tuple[str, dict[str, Any]]:
    """Train ``params.model`` on the SFT rows in a child process; returns (model folder, report).

    The preset and the SIDs are checked here, before anything is written. A rerun with the same
    data and parameters resumes from the last checkpoint in ``params.work_dir``.
    """
    modeling.check_model_config(params["model"])
    sft.SFTSettings.from_dict({**params["train"], "seed": seed})
    frames = {"sft_dataset_train": sft_dataset_train, "sft_dataset_valid": sft_dataset_valid}
    sft.check_sids_against_catalog(item_sids, frames)

    config = {**params["train"], "model": params["model"], "templates": prompts["templates"], "seed": seed}
    run_dir = Path(params["work_dir"]) / run_fingerprint(config, {**frames, "items": items, "item_sids": item_sids})
    if not params.get("resume", True):
        shutil.rmtree(run_dir, ignore_errors=True)
    clean_finished_runs(params["work_dir"], params.get("keep_finished_runs", 2), current=run_dir)
    inputs = run_dir / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    paths = {"train_path": inputs / "train.parquet", "valid_path": inputs / "valid.parquet",
             "items_path": inputs / "items.parquet", "item_sids_path": inputs / "item_sids.parquet"}
    for frame, key in ((sft_dataset_train, "train_path"), (sft_dataset_valid, "valid_path"),
                       (items, "items_path"), (item_sids, "item_sids_path")):
        frame.to_parquet(paths[key], index=False)
    config.update({k: str(v.resolve()) for k, v in paths.items()})
    config.update({"output_dir": str((run_dir / "model").resolve()),
                   "checkpoint_dir": str((run_dir / "checkpoints").resolve()),
                   "result_path": str((run_dir / "result.json").resolve())})
    logger.info("SFT run folder %s (%d train rows, %d valid rows)", run_dir, len(sft_dataset_train), len(sft_dataset_valid))
    result = run_training(ENTRY_POINT, config, int(params.get("num_processes", 1)), rendezvous=params.get("torchrun"))
    # the model folder is complete: the checkpoints and the input copies are no longer needed
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    shutil.rmtree(inputs, ignore_errors=True)
    report = {k: v for k, v in result.items() if isinstance(v, (int, float, bool)) and v is not None}
    return config["output_dir"], report


def plot_training_curves(sft_model: Path):
    """Train loss, valid loss and valid NDCG@10 / HR@10 at each evaluation of the run that wrote ``sft_model``."""
    result = modeling.read_meta(sft_model)["train"].get("result") or {}
    return curves_figure(sft_curves(result.get("valid_curve", [])), title="SFT: per evaluation")
