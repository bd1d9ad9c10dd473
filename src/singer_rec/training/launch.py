"""Run a training entry point in its own process (``python -m``, or torchrun for N processes).

Kedro nodes call :func:`run_training`; the entry module (e.g. ``singer_rec.training.sft``) reads
its config from ``--config FILE`` and writes its result json to ``config["result_path"]`` if the
config names one. The child inherits the environment, so MLflow logging (MLflow's standard
``MLFLOW_TRACKING_URI`` / ``MLFLOW_RUN_ID``) lands in the node's run. When the child reports that
logging into that run failed (``singer_rec.tracking.FAILURE_PREFIX``), the run is marked failed
here too, so the node's own logging skips it instead of reporting the same failure again.

Several machines: a :class:`Rendezvous` (torchrun's ``nnodes``, ``node_rank``, ``master_addr``,
``master_port``) runs ``num_processes`` processes on each of ``nnodes`` machines; without one, or
with ``nnodes: 1``, all processes run on this machine and meet on a free local port.
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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from singer_rec import tracking
from singer_rec.params import rule

logger = logging.getLogger(__name__)

LOG_TAIL_LINES = 60


class TrainingProcessError(RuntimeError):
    """The training process exited with a non-zero status; the message holds its log tail."""


@dataclass
class Rendezvous:
    """torchrun's multi-machine settings (the ``torchrun`` block of a training stage's parameters)."""

    nnodes: int = field(default=1, metadata=rule(ge=1))     # machines, each running num_processes processes
    node_rank: int = field(default=0, metadata=rule(ge=0))  # this machine's index, 0 .. nnodes - 1
    master_addr: str = "127.0.0.1"  # the address of node 0, reachable from every machine
    master_port: int | None = field(default=None, metadata=rule(ge=1, le=65535))  # null: a free local port

    def check(self, where: str) -> None:
        if self.node_rank >= self.nnodes:
            raise ValueError(f"{where}.node_rank must be < nnodes ({self.nnodes}), got {self.node_rank}")
        if self.nnodes > 1 and self.master_port is None:
            raise ValueError(f"{where}.master_port must be set when nnodes > 1 (every machine meets on it)")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def training_command(entry_module: str, config_path: str | os.PathLike, num_processes: int,
                     rendezvous: Rendezvous | Mapping[str, Any] | None = None) -> list[str]:
    """The command line: plain ``python -m`` for one process on one machine, torchrun (DDP) otherwise."""
    if num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    if not isinstance(rendezvous, Rendezvous):
        from singer_rec.params import from_params

        rendezvous = from_params(Rendezvous, rendezvous or {}, "torchrun")
    if num_processes == 1 and rendezvous.nnodes == 1:
        return [sys.executable, "-m", entry_module, "--config", str(config_path)]
    port = rendezvous.master_port if rendezvous.master_port is not None else _free_port()
    return [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", str(rendezvous.nnodes), "--node_rank", str(rendezvous.node_rank),
        "--nproc_per_node", str(num_processes),
        "--master_addr", rendezvous.master_addr, "--master_port", str(port),
        "-m", entry_module, "--config", str(config_path),
    ]


def run_training(entry_module: str, config: dict[str, Any], num_processes: int = 1,
                 env: dict[str, str] | None = None,
                 rendezvous: Rendezvous | Mapping[str, Any] | None = None) -> dict[str, Any]:
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
        cmd = training_command(entry_module, config_path, int(num_processes), rendezvous)
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
