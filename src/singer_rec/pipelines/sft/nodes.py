"""The SFT node: checks its inputs, hands file paths to the training process, returns its folder."""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from singer_rec import modeling
from singer_rec.curves import curves_figure, sft_curves
from singer_rec.params import from_params, rule
from singer_rec.training import sft
from singer_rec.training.launch import Rendezvous
from singer_rec.training.workdirs import RunFolder

logger = logging.getLogger(__name__)

ENTRY_POINT = "singer_rec.training.sft"


@dataclass
class SFTParams:
    """The ``sft`` parameter block, checked when a run starts (``singer_rec.params``)."""

    model: dict[str, Any]           # checked by modeling.check_model_config
    train: sft.SFTSettings
    num_processes: int = field(default=1, metadata=rule(ge=1))
    work_dir: str = "data/06_models/sft_work"
    resume: bool = True
    keep_finished_runs: int = field(default=2, metadata=rule(ge=0))
    torchrun: Rendezvous | None = None  # several machines (docs/architecture.md); null: this one

    def check(self, where: str) -> None:
        modeling.check_model_config(self.model)


def train_sft_model(sft_dataset_train: pd.DataFrame, sft_dataset_valid: pd.DataFrame, items: pd.DataFrame,
                    item_sids: pd.DataFrame, params: dict[str, Any] | SFTParams, prompts: dict[str, Any],
                    seed: int) -> tuple[str, dict[str, Any]]:
    """Train ``params.model`` on the SFT rows in a child process; returns (model folder, report).

    The preset and the SIDs are checked here, before anything is written. A rerun with the same
    data and parameters resumes from the last checkpoint in ``params.work_dir``.
    """
    given = params
    params = from_params(SFTParams, params, "sft")
    # the run folder hashes sft.train as given, not with its defaults filled in: earlier runs keep resuming
    given_train = dict(given["train"]) if isinstance(given, Mapping) else asdict(params.train)
    frames = {"sft_dataset_train": sft_dataset_train, "sft_dataset_valid": sft_dataset_valid}
    sft.check_sids_against_catalog(item_sids, frames)

    # the global seed, always: SFT has no seed of its own
    config = {**given_train, "model": params.model, "templates": prompts["templates"], "seed": seed}
    folder = RunFolder.prepare(params.work_dir, config, {**frames, "items": items, "item_sids": item_sids},
                               resume=params.resume, keep_finished_runs=params.keep_finished_runs)
    inputs = folder.write_inputs({"train": sft_dataset_train, "valid": sft_dataset_valid, "items": items,
                                  "item_sids": item_sids})
    config.update({f"{name}_path": path for name, path in inputs.items()})
    config.update(folder.outputs("output_dir"))
    logger.info("SFT run folder %s (%d train rows, %d valid rows)", folder.path, len(sft_dataset_train),
                len(sft_dataset_valid))
    result = folder.run(ENTRY_POINT, config, params.num_processes, params.torchrun)
    report = {k: v for k, v in result.items() if isinstance(v, (int, float, bool)) and v is not None}
    return config["output_dir"], report


def plot_training_curves(sft_model: Path):
    """Train loss, valid loss and valid NDCG@10 / HR@10 at each evaluation of the run that wrote ``sft_model``."""
    result = modeling.read_meta(sft_model)["train"].get("result") or {}
    return curves_figure(sft_curves(result.get("valid_curve", [])), title="SFT: per evaluation")
