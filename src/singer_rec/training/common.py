"""Training utilities shared by the SFT and RL entry points.

Seeding, the device of a ``device`` parameter (``resolve_device``: auto = CUDA when available,
TF32 on CUDA), the process group (single process, or DDP under torchrun: gloo on CPU, nccl on GPU),
the autocast choice (auto = bf16 on a capable GPU, float32 on a CPU), AdamW + cosine schedule, and
checkpoints that resume exactly: model, optimizer, scheduler, RNG states and the trainer's own state
(step, epoch, ...). Checkpoints are
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
import re
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
        return self._all_reduce(values, torch.distributed.ReduceOp.SUM)

    def all_reduce_max(self, values: list[float]) -> list[float]:
        """The largest of each number over the processes (returns them unchanged in one process)."""
        return self._all_reduce(values, torch.distributed.ReduceOp.MAX)

    def _all_reduce(self, values: list[float], op) -> list[float]:
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
        torch.distributed.all_reduce(t, op=op)
        return t.tolist()

    def shard(self, n: int) -> range:
        """This process's rows of ``n``: ``rank, rank + world_size, ...`` (all of them in one process)."""
        return range(self.rank, n, self.world_size)

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order (``[obj]`` in one process). Pickled: only for objects
        of this job's own processes (ranks, rewards, RNG states), never for anything read from outside."""
        if not self.enabled:
            return [obj]
        gathered: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(gathered, obj)
        return gathered

    def gather_shards(self, n: int, local: Sequence[Any]) -> list[Any]:
        """The per-row results of :meth:`shard` from every process, back in row order ``0 .. n-1``."""
        if not self.enabled:
            return list(local)
        out: list[Any] = [None] * n
        for rank, values in enumerate(self.all_gather_object(list(local))):
            for row, value in zip(range(rank, n, self.world_size), values):
                out[row] = value
        return out

    def any(self, flag: bool) -> bool:
        """True on every process when ``flag`` is true on at least one (a decision all ranks share)."""
        return self.all_reduce_sum([1.0 if flag else 0.0])[0] > 0


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s own random streams (dropout): ``seed`` itself on rank 0, so one
    process is seeded as before, and a distinct seed on every other rank."""
    return seed if rank == 0 else (seed * 1_000_003 + rank) % 2**63


def seed_rank_streams(seed: int, dist: Dist) -> None:
    """Reseed this process's global generators for what must differ between ranks (dropout masks),
    after what must be equal (model init) has drawn from them. Nothing changes on rank 0."""
    if dist.rank != 0:
        seed_everything(rank_seed(seed, dist.rank))


DEVICE_NAMES = "auto, cpu, cuda, cuda:N"
AUTOCAST_MODES = ("auto", "bf16", "off")


def check_device_name(name: Any, where: str = "device") -> str:
    """``name`` when it is a device parameter value (auto | cpu | cuda | cuda:N); else a ValueError naming ``where``."""
    if not isinstance(name, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", name):
        raise ValueError(f"{where} must be one of {DEVICE_NAMES}, got {name!r}")
    return name


def enable_tf32() -> None:
    """TensorFloat-32 for float32 matmuls and convolutions on CUDA (Ampere and later); CPU math is untouched."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def resolve_device(name: str = "auto", where: str = "device", local_rank: int | None = None) -> torch.device:
    """The device of a ``device`` parameter: ``auto`` is CUDA when available, else the CPU.

    ``cuda`` is GPU ``local_rank`` (under torchrun) or the current one; ``cuda:N`` is GPU N. A CUDA
    device turns TF32 on for float32 matmuls (:func:`enable_tf32`); nothing changes on a CPU.
    Raises ValueError naming ``where`` for an unknown value, or for a CUDA device without CUDA.
    """
    check_device_name(name, where)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"{where} is {name!r}, but CUDA is not available here (use auto or cpu)")
    device = torch.device(name)
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device() if local_rank is None else local_rank)
    enable_tf32()
    return device


def init_distributed(device: str = "auto") -> Dist:
    """The process group under torchrun (``WORLD_SIZE`` > 1), or a single process.

    ``device`` as :func:`resolve_device`; under torchrun each process takes the GPU of its
    ``LOCAL_RANK`` (a ``cuda:N`` then only says CUDA)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world_size > 1 and check_device_name(device).startswith("cuda"):
        device = "cuda"
    dev = resolve_device(device, local_rank=local_rank if world_size > 1 else None)
    use_cuda = dev.type == "cuda"
    if use_cuda:
        torch.cuda.set_device(dev)
    if world_size > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Dist(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def close_distributed(dist: Dist) -> None:
    if dist.enabled and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 matmuls (oneDNN; e.g. AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_dtype(device: torch.device, mode: str | bool | None = "auto") -> torch.dtype | None:
    """The autocast dtype of an ``autocast`` parameter (None: float32, no autocast).

    ``auto``: bf16 on a CUDA device that supports it, float32 on a CPU (so ``auto`` never changes a
    CPU result; bf16 on a CPU only when asked with ``bf16``); ``bf16``: bf16 on any device;
    ``off``: float32.
    """
    if mode in (None, False, "off", "none", "fp32"):
        return None
    if mode == "bf16" or mode is True:
        return torch.bfloat16
    if mode != "auto":
        raise ValueError(f"autocast must be 'auto', 'bf16' or 'off', got {mode!r}")
    if torch.device(device).type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
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


def rng_states(dist: Dist | None = None) -> list[tuple[dict[str, torch.Tensor], dict[str, Any]]]:
    """Every process's RNG state in rank order (a collective under DDP: every rank must call it);
    what :func:`save_checkpoint` stores, so that each rank resumes its own streams (dropout)."""
    state = _rng_state()
    if dist is None or not dist.enabled:
        return [state]
    return dist.all_gather_object(state)


def _rng_file(rank: int) -> str:
    return "rng.safetensors" if rank == 0 else f"rng.rank{rank}.safetensors"


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
                    keep: int = 2, rng: Sequence[tuple[dict[str, torch.Tensor], dict[str, Any]]] | None = None) -> Path:
    """Write ``step-NNNNNNNN`` under ``directory`` atomically; keep the newest ``keep`` checkpoints.

    ``rng``: every rank's RNG state (:func:`rng_states`, gathered on all ranks; the writing rank
    passes it); rank 0's is ``rng.safetensors`` + ``state.json["rng"]``, rank r's
    ``rng.rank{r}.safetensors`` + ``state.json["rng_ranks"][r]``. None: this process's own only."""
    from safetensors.torch import save_file, save_model

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{CHECKPOINT_PREFIX}{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=".ckpt.tmp-", dir=directory))
    try:
        save_model(getattr(model, "module", model), str(tmp / "model.safetensors"))
        opt_tensors, opt_plain = _split_optimizer_state(optimizer)
        states = list(rng) if rng is not None else [_rng_state()]
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        for rank, (rng_tensors, _) in enumerate(states):
            save_file(rng_tensors, str(tmp / _rng_file(rank)))
        payload = {"step": step, "trainer": trainer_state, "optimizer": opt_plain,
                   "scheduler": scheduler.state_dict(), "rng": states[0][1]}
        if len(states) > 1:
            payload["rng_ranks"] = {str(rank): plain for rank, (_, plain) in enumerate(states) if rank > 0}
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
                    scheduler, rank: int = 0) -> dict[str, Any]:
    """Restore model, optimizer, scheduler and rank ``rank``'s RNG states; returns ``{"step", "trainer"}``.

    A checkpoint without that rank's RNG state (written by fewer processes) restores rank 0's,
    with a warning: the run goes on, but that rank's dropout masks are not the interrupted run's."""
    from safetensors.torch import load_file, load_model

    path = Path(path)
    payload = json.loads((path / "state.json").read_text(encoding="utf-8"))
    target = getattr(model, "module", model)
    load_model(target, str(path / "model.safetensors"), device=str(next(target.parameters()).device))
    optimizer.load_state_dict(_join_optimizer_state(load_file(str(path / "optimizer.safetensors")), payload["optimizer"]))
    scheduler.load_state_dict(payload["scheduler"])
    plain = (payload.get("rng_ranks") or {}).get(str(rank)) if rank > 0 else payload["rng"]
    if plain is None or not (path / _rng_file(rank)).is_file():
        logger.warning("%s has no RNG state of rank %d: restoring rank 0's", path, rank)
        rank, plain = 0, payload["rng"]
    _set_rng_state(load_file(str(path / _rng_file(rank))), plain)
    return {"step": payload["step"], "trainer": payload["trainer"]}
