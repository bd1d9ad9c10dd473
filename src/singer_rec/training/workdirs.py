"""Work folders of the training nodes (``sft.work_dir``, ``rl.work_dir``): one run folder per inputs.

A node names its run folder after a fingerprint of its configuration and data, so a rerun with
the same inputs resumes there and a rerun with changed inputs gets a new folder. A run folder is

- *unfinished* while it has no ``result.json``: its checkpoints let a rerun resume; kept;
- *finished, model not taken*: ``result.json`` and ``model/`` (a run whose model no catalog
  dataset took, e.g. an ablation variant that reuses it); kept;
- *finished, model in the catalog*: ``result.json`` but no ``model/`` any more, because the
  ``ModelFolderDataset`` moved it into ``data/06_models``. Only these are cleaned:
  :func:`clean_finished_runs` keeps the newest ``keep`` of them (``keep_finished_runs``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

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
