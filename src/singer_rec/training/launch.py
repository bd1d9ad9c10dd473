"""Run a training entry point in its own process (``python -m``, or torchrun for N processes).

Kedro nodes call :func:`run_training`; the entry module (e.g. ``singer_rec.training.sft``) reads
its config from ``--config FILE`` and writes its result json to ``config["result_path"]`` if the
config names one. The child inherits the environment, so MLflow logging (MLflow's standard
``MLFLOW_TRACKING_URI`` / ``MLFLOW_RUN_ID``) lands in the node's run. When the child reports that
logging into that run failed (``singer_rec.tracking.FAILURE_PREFIX``), the run is marked failed
here too, so the node's own logging skips it instead of reporting the same failure again.
"""
from __future__ import annotations

import collections
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from singer_rec import tracking

logger = logging.getLogger(__name__)

LOG_TAIL_LINES = 60


class TrainingProcessError(RuntimeError):
    """The training process exited with a non-zero status; the message holds its log tail."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def training_command(entry_module: str, config_path: str | os.PathLike, num_processes: int) -> list[str]:
    """The command line: plain ``python -m`` for one process, torchrun (DDP) for more."""
    if num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    if num_processes == 1:
        return [sys.executable, "-m", entry_module, "--config", str(config_path)]
    return [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", "1", "--nproc_per_node", str(num_processes),
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        "-m", entry_module, "--config", str(config_path),
    ]


def run_training(entry_module: str, config: dict[str, Any], num_processes: int = 1,
                 env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``entry_module`` with ``config`` in a child process, streaming its log.

    Returns the entry's result json (``config["result_path"]``) if it wrote one, else ``{}``.
    Raises :class:`TrainingProcessError` with the tail of the log when the process fails.
    """
    config = dict(config)
    fd, config_path = tempfile.mkstemp(prefix="singer-train-", suffix=".json")
    result_path = config.get("result_path")
    if result_path and Path(result_path).exists():
        Path(result_path).unlink()  # never report a stale result
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(config, f, indent=1, default=str)
        cmd = training_command(entry_module, config_path, int(num_processes))
        logger.info("Launching %s", " ".join(cmd))
        # the node's own run, also when the thread runner runs nodes side by side
        child_env = {**tracking.child_environment(os.environ), **(env or {}), "PYTHONUNBUFFERED": "1"}
        tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=child_env, bufsize=1) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.rstrip("\n")
                tail.append(line)
                failure = tracking.FAILURE_LINE.search(line)
                if failure:
                    tracking.mark_failed(failure.group(1), line)
                logger.info("[%s] %s", entry_module.rsplit(".", 1)[-1], line)
            returncode = proc.wait()
        if returncode != 0:
            raise TrainingProcessError(
                f"training process {entry_module} failed with exit status {returncode}; last log lines:\n"
                + "\n".join(tail)
            )
    finally:
        Path(config_path).unlink(missing_ok=True)
    if result_path and Path(result_path).is_file():
        return json.loads(Path(result_path).read_text(encoding="utf-8"))
    return {}
