"""The S-DPO nodes: train in a child process from the SFT model, then score the test rows like a baseline."""
from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from singer_rec.params import rule
from singer_rec.pipelines.baselines.nodes import METRIC_COLUMNS
from singer_rec.pipelines.evaluate.nodes import evaluate_test
from singer_rec.training.launch import Rendezvous, run_training
from singer_rec.training.sdpo import SDPOSettings
from singer_rec.training.workdirs import clean_finished_runs, run_fingerprint

logger = logging.getLogger(__name__)

ENTRY_POINT = "singer_rec.training.sdpo"
METHOD = "S-DPO"


@dataclass
class SDPOParams:
    """The ``sdpo`` parameter block, checked when a run starts (``singer_rec.params``)."""

    train: Any = None               # checked by training.sdpo.SDPOSettings
    work_dir: str = "data/06_models/sdpo_work"
    resume: bool = True
    keep_finished_runs: int = field(default=2, metadata=rule(ge=0))
    num_processes: int = field(default=1, metadata=rule(ge=1))  # > 1: torchrun, prompts split, gradients all-reduced
    torchrun: Rendezvous | None = None  # several machines, as sft.torchrun (docs/architecture.md); null: this one

    def check(self, where: str) -> None:
        SDPOSettings.from_dict(self.train, f"{where}.train")


def train_sdpo_model(sft_model: Path, sft_dataset_train: pd.DataFrame, sft_dataset_valid: pd.DataFrame,
                     params: dict[str, Any], seed: int) -> tuple[str, dict[str, Any]]:
    """S-DPO from ``sft_model`` in a child process; returns (model folder, scalar report).

    A rerun with the same model, data and settings resumes from the last checkpoint in ``params.work_dir``.
    """
    settings = SDPOSettings.from_dict({"seed": seed, **(params.get("train") or {})}, "sdpo.train")
    config = asdict(settings)
    frames = {"sft_dataset_train": sft_dataset_train, "sft_dataset_valid": sft_dataset_valid}
    run_dir = Path(params["work_dir"]) / run_fingerprint({**config, "sft_model": str(sft_model)}, frames)
    if not params.get("resume", True):
        shutil.rmtree(run_dir, ignore_errors=True)
    clean_finished_runs(params["work_dir"], params.get("keep_finished_runs", 2), current=run_dir)
    inputs = run_dir / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    for name, frame in frames.items():
        frame.to_parquet(inputs / f"{name}.parquet", index=False)
    config.update({"model_path": str(Path(sft_model).resolve()),
                   "train_path": str((inputs / "sft_dataset_train.parquet").resolve()),
                   "valid_path": str((inputs / "sft_dataset_valid.parquet").resolve()),
                   "output_dir": str((run_dir / "model").resolve()),
                   "checkpoint_dir": str((run_dir / "checkpoints").resolve()),
                   "result_path": str((run_dir / "result.json").resolve())})
    logger.info("S-DPO run folder %s (start: %s)", run_dir, sft_model)
    result = run_training(ENTRY_POINT, config, int(params.get("num_processes", 1)), rendezvous=params.get("torchrun"))
    # the model folder is complete: the checkpoints and the input copies are no longer needed
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    shutil.rmtree(inputs, ignore_errors=True)
    report = {k: v for k, v in result.items() if isinstance(v, (int, float, bool)) and v is not None}
    return config["output_dir"], report


def evaluate_sdpo_model(sdpo_model: Path, test_sequences: pd.DataFrame, params: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Test HR/NDCG@K by the evaluate stage's constrained beam search, in the baselines' format:
    ``{"S-DPO": {metrics..., "n", "wall_time_s", "train_s", "decode_s"}}`` (wall time: the SFT and S-DPO
    training that made the model plus this evaluation, as for the SINGER row)."""
    _, metrics = evaluate_test(sdpo_model, test_sequences, params)
    missing = [c for c in METRIC_COLUMNS if c not in metrics]
    if missing:
        raise ValueError(f"evaluate.ks gives no {missing}: the baselines' table needs K in 3, 5, 10")
    return {METHOD: {**{c: metrics[c] for c in METRIC_COLUMNS}, "n": int(metrics["n"]),
                     **{k: metrics[k] for k in ("wall_time_s", "train_s", "decode_s")}}}
