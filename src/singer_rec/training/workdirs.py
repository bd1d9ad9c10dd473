"""Work folders of the training nodes (``sft.work_dir``, ``rl.work_dir``): one run folder per inputs.

A node names its run folder after a fingerprint of its configuration and data, so a rerun with
the same inputs resumes there and a rerun with changed inputs gets a new folder. A run folder is

- *unfinished* while it has no ``result.json``: its checkpoints let a rerun resume; kept;
- *finished, model not taken*: ``result.json`` and ``model/`` (a run whose model no catalog
  dataset took, e.g. an ablation variant that reuses it); kept;
- *finished, model in the catalog*: ``result.json`` but no ``model/`` any more, because the
  ``ModelFolderDataset`` moved it into ``data/06_models``. Only these are cleaned:
  :func:`clean_finished_runs` keeps the newest ``keep`` of them (``keep_finished_runs``).

:class:`RunFolder` is the routine the nodes share: name the folder, reset it unless resuming, clean
the other finished runs, write the process's parquet inputs, launch it, remove what it no longer needs.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from singer_rec.training.launch import Rendezvous, run_training

logger = logging.getLogger(__name__)


# Settings that change how a run is carried out, not what it computes: a rerun that changes only
# these resumes the same run (e.g. with more threads) instead of starting over.
RESUME_NEUTRAL_KEYS = frozenset({"num_threads", "checkpoint_every", "keep_checkpoints", "log_every",
                                 "keep_finished_runs", "resume", "gradient_checkpointing"})


def _without_resume_neutral_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_resume_neutral_keys(v) for k, v in value.items() if k not in RESUME_NEUTRAL_KEYS}
    return value


def run_fingerprint(config: dict[str, Any], frames: dict[str, pd.DataFrame]) -> str:
    """Identifies a training run: same config (but its ``RESUME_NEUTRAL_KEYS``, at any depth) and
    data -> same checkpoint folder (resume)."""
    digest = hashlib.sha256(json.dumps(_without_resume_neutral_keys(config), sort_keys=True, default=str).encode())
    for name in sorted(frames):
        digest.update(name.encode())
        digest.update(frames[name].to_json(orient="split", default_handler=str).encode())
    return digest.hexdigest()[:16]


RESULT_FILE = "result.json"
MODEL_DIR = "model"
CHECKPOINT_DIR = "checkpoints"
INPUT_DIR = "inputs"


def taken_runs(work_dir: str | os.PathLike) -> list[Path]:
    """Finished run folders whose model the catalog has taken, oldest first (by their result's time)."""
    root = Path(work_dir)
    if not root.is_dir():
        return []
    runs = [p for p in root.iterdir()
            if p.is_dir() and (p / RESULT_FILE).is_file() and not (p / MODEL_DIR).exists()]
    return sorted(runs, key=lambda p: ((p / RESULT_FILE).stat().st_mtime_ns, p.name))


def clean_finished_runs(work_dir: str | os.PathLike, keep: int, current: str | os.PathLike | None = None) -> list[Path]:
    """Remove the finished runs whose model is in the catalog, but the newest ``keep``; never ``current``.

    Returns the removed folders. ``keep`` must be >= 0.
    """
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
        raise ValueError(f"keep_finished_runs must be an integer >= 0, got {keep!r}")
    current_path = Path(current).resolve() if current is not None else None
    runs = [p for p in taken_runs(work_dir) if p.resolve() != current_path]
    removed = runs[: len(runs) - keep] if keep else runs
    for run in removed:
        shutil.rmtree(run, ignore_errors=True)
    if removed:
        logger.info("Removed %d finished run folder(s) from %s (their models are in the catalog; kept %d)",
                    len(removed), work_dir, min(keep, len(runs)))
    return removed


@dataclass(frozen=True)
class RunFolder:
    """One training run's folder ``<work_dir>/<fingerprint>``: ``inputs/`` (the parquet copies the
    training process reads), ``checkpoints/``, ``model/`` and ``result.json``."""

    path: Path

    @classmethod
    def prepare(cls, work_dir: str | os.PathLike, config: dict[str, Any], frames: Mapping[str, pd.DataFrame], *,
                resume: bool, keep_finished_runs: int) -> RunFolder:
        """The run folder of ``config`` and ``frames`` (:func:`run_fingerprint`), emptied first unless
        ``resume``; the other finished runs of ``work_dir`` are cleaned (:func:`clean_finished_runs`)."""
        folder = cls(Path(work_dir) / run_fingerprint(config, dict(frames)))
        if not resume:
            shutil.rmtree(folder.path, ignore_errors=True)
        clean_finished_runs(work_dir, keep_finished_runs, current=folder.path)
        return folder

    def write_inputs(self, frames: Mapping[str, pd.DataFrame]) -> dict[str, str]:
        """Each frame as ``inputs/<name>.parquet``; their resolved paths by name."""
        inputs = self.path / INPUT_DIR
        inputs.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name, frame in frames.items():
            frame.to_parquet(inputs / f"{name}.parquet", index=False)
            paths[name] = str((inputs / f"{name}.parquet").resolve())
        return paths

    def outputs(self, model_key: str) -> dict[str, str]:
        """Where the process writes, resolved: the model folder (under ``model_key``), ``checkpoint_dir``
        and ``result_path``."""
        return {model_key: str((self.path / MODEL_DIR).resolve()),
                "checkpoint_dir": str((self.path / CHECKPOINT_DIR).resolve()),
                "result_path": str((self.path / RESULT_FILE).resolve())}

    def run(self, entry_point: str, config: dict[str, Any], num_processes: int,
            rendezvous: Rendezvous | None) -> dict[str, Any]:
        """``run_training`` with ``config``, then :meth:`finish`; returns the process's result."""
        result = run_training(entry_point, config, num_processes, rendezvous=rendezvous)
        self.finish()
        return result

    def finish(self) -> None:
        """The model folder is complete: its checkpoints and the input copies are no longer needed."""
        shutil.rmtree(self.path / CHECKPOINT_DIR, ignore_errors=True)
        shutil.rmtree(self.path / INPUT_DIR, ignore_errors=True)
