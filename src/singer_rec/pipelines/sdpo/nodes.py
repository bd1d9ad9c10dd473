"""The S-DPO nodes: train in a child process from the SFT model, then score the test rows like a baseline."""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from singer_rec.params import from_params, nested_defaults, rule
from singer_rec.pipelines.baselines.nodes import METRIC_COLUMNS
from singer_rec.pipelines.evaluate.nodes import evaluate_test
from singer_rec.training.launch import Rendezvous
from singer_rec.training.sdpo import SDPOSettings
from singer_rec.training.workdirs import RunFolder

logger = logging.getLogger(__name__)

ENTRY_POINT = "singer_rec.training.sdpo"
METHOD = "S-DPO"


@dataclass
class SDPOParams:
    """The ``sdpo`` parameter block, checked when a run starts (``singer_rec.params``)."""

    train: SDPOSettings = field(default_factory=SDPOSettings)
    work_dir: str = "data/06_models/sdpo_work"
    resume: bool = True
    keep_finished_runs: int = field(default=2, metadata=rule(ge=0))
    num_processes: int = field(default=1, metadata=rule(ge=1))  # > 1: torchrun, prompts split, gradients all-reduced
    torchrun: Rendezvous | None = None  # several machines, as sft.torchrun (docs/architecture.md); null: this one


def train_sdpo_model(sft_model: Path, sft_dataset_train: pd.DataFrame, sft_dataset_valid: pd.DataFrame,
                     params: dict[str, Any] | SDPOParams, seed: int) -> tuple[str, dict[str, Any]]:
    """S-DPO from ``sft_model`` in a child process; returns (model folder, scalar report).

    ``params.train.seed`` defaults to the global ``seed``. A rerun with the same model, data and
    settings resumes from the last checkpoint in ``params.work_dir``.
    """
    params = from_params(SDPOParams, nested_defaults(params, "train", seed=seed), "sdpo")
    config = asdict(params.train)
    frames = {"sft_dataset_train": sft_dataset_train, "sft_dataset_valid": sft_dataset_valid}
    folder = RunFolder.prepare(params.work_dir, {**config, "sft_model": str(sft_model)}, frames,
                               resume=params.resume, keep_finished_runs=params.keep_finished_runs)
    inputs = folder.write_inputs(frames)
    config.update({"model_path": str(Path(sft_model).resolve()), "train_path": inputs["sft_dataset_train"],
                   "valid_path": inputs["sft_dataset_valid"], **folder.outputs("output_dir")})
    logger.info("S-DPO run folder %s (start: %s)", folder.path, sft_model)
    result = folder.run(ENTRY_POINT, config, params.num_processes, params.torchrun)
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
