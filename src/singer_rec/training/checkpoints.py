"""The checkpoint and best-model folder steps the trainers share (SFT, S-DPO, RL).

- :func:`save_checkpoint`: every rank's RNG state gathered, rank 0 writes the checkpoint
  (``common.save_checkpoint``), every rank waits for it;
- :func:`save_best_folder`: rank 0 writes the selected model's folder, every rank waits;
- :func:`publish_best`: the best model folder, its meta completed, copied into place as the
  run's output folder (staged beside it, then swapped in atomically).
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from singer_rec import modeling
from singer_rec.training import common


def save_checkpoint(dist: common.Dist, directory: Path, step: int, model, optimizer, scheduler,
                    trainer_state: dict[str, Any], keep: int) -> None:
    """A checkpoint of ``step`` that resumes every rank's own random streams (a collective under DDP)."""
    rng = common.rng_states(dist)  # every rank's, gathered on all of them
    if dist.is_main:
        common.save_checkpoint(directory, step, model, optimizer, scheduler, trainer_state, keep=keep, rng=rng)
    dist.barrier()


def save_best_folder(dist: common.Dist, model, tokenizer, meta: Mapping[str, Any], folder: Path) -> None:
    """The model folder of the best evaluation so far (rank 0 writes, every rank waits)."""
    if dist.is_main:
        modeling.save_model_folder(model, tokenizer, meta, folder)
    dist.barrier()


def publish_best(best: Path, output: Path, complete_meta: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """``best`` with its meta replaced by ``complete_meta(meta)``, copied to ``output`` (rank 0 only)."""
    meta = complete_meta(modeling.read_meta(best))
    (best / modeling.META_FILE).write_text(json.dumps(meta, indent=1, ensure_ascii=False), encoding="utf-8")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.with_name(f".{output.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(best, staging)
    modeling.replace_folder_atomically(staging, output)
