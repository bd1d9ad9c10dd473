"""Peak memory of a training process, for the SFT and RL results and MLflow.

On a GPU the peak is what PyTorch's caching allocator handed out (``torch.cuda.max_memory_allocated``):
the model, optimizer state, activations and logits, without the allocator's cached free blocks. On a
CPU it is the process's peak resident set size (``ru_maxrss``), which also counts Python, the data
and the libraries. The two are different quantities, hence ``peak_memory_kind`` beside the number.
"""
from __future__ import annotations

import resource
import sys

import torch

CUDA_ALLOCATED = "cuda_allocated"
CPU_RSS = "cpu_rss"


def local_peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """(peak MiB, kind) of this process: CUDA peak allocated on ``device`` when it is a GPU, else peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, CUDA_ALLOCATED
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in KiB on Linux and in bytes on macOS
    return peak / (2**20 if sys.platform == "darwin" else 2**10), CPU_RSS


def peak_memory(dist) -> dict[str, float | str]:
    """``{"peak_memory_mb", "peak_memory_kind"}``: the largest peak over the processes of ``dist``
    (a ``common.Dist``; every process must call it, as it is a collective under DDP)."""
    peak, kind = local_peak_memory_mb(dist.device)
    (peak,) = dist.all_reduce_max([peak])  # the rank that needs the most memory decides what a machine must hold
    return {"peak_memory_mb": round(peak, 1), "peak_memory_kind": kind}


def enable_gradient_checkpointing(model) -> None:
    """Keep only each decoder layer's input in the forward pass and recompute the rest in the backward
    pass: activation memory drops from ``layers x activations`` to about one layer's, for roughly one
    more forward of compute. The gradients are the same (up to float rounding).

    Non-reentrant checkpointing (torch's recommended kind); transformers also makes the input
    embeddings require grad, which a LoRA model whose embeddings are frozen needs. ``model`` may be
    a peft model: the call reaches the transformers model underneath.
    """
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
