"""Training utilities shared by the SFT and RL entry points.

Seeding, the process group (single process, or DDP under torchrun: gloo on CPU, nccl on GPU),
the autocast choice, AdamW + cosine schedule, and checkpoints that resume exactly: model,
optimizer, scheduler, RNG states and the trainer's own state (step, epoch, ...). Checkpoints are
safetensors + json (no pickle), written to a temporary folder and renamed into place.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "step-"


# --------------------------------------------------------------------------------------------
# process setup
# --------------------------------------------------------------------------------------------
def read_config(argv: list[str] | None = None) -> dict[str, Any]:
    """``--config FILE`` (json) of a training entry point."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    args = parser.parse_args(argv)
    return json.loads(Path(args.config).read_text(encoding="utf-8"))


def run_entry_point(train: Callable[[dict[str, Any]], Any], argv: Sequence[str] | None = None) -> None:
    """The ``python -m`` entry of a training process: log to stderr, read ``--config``, train."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    train(read_config(list(argv) if argv is not None else None))


@contextlib.contextmanager
def torch_threads(num_threads: int | None):
    """Intra-op threads for one node; on a busy shared CPU 1 thread beats oversubscription."""
    previous = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(int(num_threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class WallClock:
    """A run's wall seconds across attempts: ``before`` (recorded at the checkpoint a resumed run
    starts from; the work lost after it is not counted) plus this attempt's."""

    def __init__(self) -> None:
        self.before, self.started = 0.0, time.perf_counter()

    def attempt(self) -> float:
        return time.perf_counter() - self.started

    def total(self) -> float:
        return self.split()[0]

    def split(self) -> tuple[float, float]:
        """``(total, attempt)`` read at one instant, so that total == before + attempt exactly."""
        attempt = self.attempt()
        return self.before + attempt, attempt


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """Sum a few numbers over the processes (returns them unchanged in one process)."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
        torch.distributed.all_reduce(t)
        return t.tolist()


def init_distributed(device: str = "auto") -> Dist:
    """The process group under torchrun (``WORLD_SIZE`` > 1), or a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Dist(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def close_distributed(dist: Dist) -> None:
    if dist.enabled and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def autocast_dtype(device: torch.device, mode: str | bool | None = "auto") -> torch.dtype | None:
    """bf16 where the hardware supports it (``auto``), forced (``bf16``) or off (``off``/false)."""
    if mode in (None, False, "off", "none", "fp32"):
        return None
    if mode == "bf16" or mode is True:
        return torch.bfloat16
    if mode != "auto":
        raise ValueError(f"autocast must be 'auto', 'bf16' or 'off', got {mode!r}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    try:
        return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None
    except (AttributeError, RuntimeError):
        return None


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def optimizer_and_schedule(model: torch.nn.Module, lr: float, weight_decay: float, total_steps: int,
                           warmup_steps: int = 0):
    """AdamW over the trainable parameters and a linear-warmup cosine decay to 0."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return optimizer, scheduler


# --------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------
def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    np_state = np.random.get_state()
    plain = {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    return tensors, plain


def _set_rng_state(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, state, gauss = plain["python"]
    random.setstate((version, tuple(state), gauss))
    name, keys, pos, has_gauss, cached = plain["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def _split_optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    state: dict[str, dict[str, Any]] = {}
    for idx, entry in sd["state"].items():
        state[str(idx)] = {}
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{key}"] = value.detach().cpu().contiguous()
                state[str(idx)][key] = {"tensor": f"{idx}.{key}"}
            else:
                state[str(idx)][key] = value
    return tensors, {"state": state, "param_groups": sd["param_groups"]}


def _join_optimizer_state(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> dict[str, Any]:
    state = {}
    for idx, entry in plain["state"].items():
        state[int(idx)] = {k: tensors[v["tensor"]] if isinstance(v, dict) and "tensor" in v else v
                           for k, v in entry.items()}
    return {"state": state, "param_groups": plain["param_groups"]}


def save_checkpoint(directory: str | os.PathLike, step: int, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler, trainer_state: dict[str, Any],
                    keep: int = 2) -> Path:
    """Write ``step-NNNNNNNN`` under ``directory`` atomically; keep the newest ``keep`` checkpoints."""
    from safetensors.torch import save_file, save_model

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{CHECKPOINT_PREFIX}{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=".ckpt.tmp-", dir=directory))
    try:
        save_model(getattr(model, "module", model), str(tmp / "model.safetensors"))
        opt_tensors, opt_plain = _split_optimizer_state(optimizer)
        rng_tensors, rng_plain = _rng_state()
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        save_file(rng_tensors, str(tmp / "rng.safetensors"))
        payload = {"step": step, "trainer": trainer_state, "optimizer": opt_plain,
                   "scheduler": scheduler.state_dict(), "rng": rng_plain}
        (tmp / "state.json").write_text(json.dumps(payload), encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        # a full disk names only the file: say which checkpoint, and what is kept
        err.add_note(f"while writing the checkpoint {final}: nothing of it was kept; the older checkpoints are untouched")
        raise
    for old in list_checkpoints(directory)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir()
             if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX) and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None


def load_checkpoint(path: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler) -> dict[str, Any]:
    """Restore model, optimizer, scheduler and RNG states; returns ``{"step", "trainer"}``."""
    from safetensors.torch import load_file, load_model

    path = Path(path)
    payload = json.loads((path / "state.json").read_text(encoding="utf-8"))
    target = getattr(model, "module", model)
    load_model(target, str(path / "model.safetensors"), device=str(next(target.parameters()).device))
    optimizer.load_state_dict(_join_optimizer_state(load_file(str(path / "optimizer.safetensors")), payload["optimizer"]))
    scheduler.load_state_dict(payload["scheduler"])
    _set_rng_state(load_file(str(path / "rng.safetensors")), payload["rng"])
    return {"step": payload["step"], "trainer": payload["trainer"]}
