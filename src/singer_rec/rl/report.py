"""Summaries of an RL run: the scalar report and the reward-distribution plot (paper Fig. 1b)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


def summary_report(result: Mapping[str, Any]) -> dict[str, float]:
    """Scalars of a training result: probe hit rate / mean reward / share of zero rewards before
    and after, rollout statistics of the first and last 10% of steps, time; with a valid curve, valid
    NDCG@10 at the start, at the last step and at the selected step (``select: valid``)."""
    history = result["history"]
    window = max(1, len(history) // 10)
    report: dict[str, float] = {
        "steps": float(result["total_steps"]),
        "prompts": float(result.get("prompts", 0)),
        "wall_seconds": float(result.get("wall_seconds", 0.0)),
        "seconds_per_step": _mean([h["seconds_per_step"] for h in history]),
    }
    if result.get("torch_threads"):
        report["torch_threads"] = float(result["torch_threads"])
    if result.get("peak_memory_mb") is not None:  # CUDA peak allocated on a GPU, peak RSS on a CPU (result's kind)
        report["peak_memory_mb"] = float(result["peak_memory_mb"])
    for when in ("before", "after"):
        probe = result["probe"][when]
        report[f"probe_hit_rate_{when}"] = float(probe["hit_rate"])
        report[f"probe_mean_reward_{when}"] = _mean(probe["rewards"])
        report[f"probe_zero_reward_share_{when}"] = _mean([float(r == 0.0) for r in probe["rewards"]])
    for key in ("mean_reward", "hit_rate", "hard_fraction", "guide_length", "zero_advantage_fraction", "kl", "entropy",
                "clip_fraction"):
        if any(key not in h for h in history):  # a history written before the key was recorded
            continue
        report[f"first_{key}"] = _mean([h[key] for h in history[:window]])
        report[f"last_{key}"] = _mean([h[key] for h in history[-window:]])
    curve = result.get("valid_curve") or []
    if curve:
        report["valid_ndcg10_first"] = float(curve[0]["NDCG@10"])
        report["valid_ndcg10_last"] = float(curve[-1]["NDCG@10"])
        report["valid_ndcg10_best"] = max(float(p["NDCG@10"]) for p in curve)
    if result.get("selected_step") is not None:
        report["selected_step"] = float(result["selected_step"])
    return report


def reward_distribution_figure(probe: Mapping[str, Any], reward_variant: str = ""):
    """Histograms of the probe prompts' rollout rewards before and after RL, on shared bins."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    before = np.asarray(probe["before"]["rewards"], dtype=float)
    after = np.asarray(probe["after"]["rewards"], dtype=float)
    both = np.concatenate([before, after]) if before.size + after.size else np.zeros(1)
    bins = np.linspace(both.min() - 1e-6, both.max() + 1e-6, 25)
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    ax.hist(before, bins=bins, alpha=0.55, label=f"before RL (hit rate {probe['before']['hit_rate']:.2f})")
    ax.hist(after, bins=bins, alpha=0.55, label=f"after RL (hit rate {probe['after']['hit_rate']:.2f})")
    ax.set_xlabel(f"rollout reward ({reward_variant or 'reward'}), unguided beam rollouts of fixed probe prompts")
    ax.set_ylabel("rollouts")
    ax.set_title("Reward distribution of rollouts before and after RL")
    ax.legend()
    fig.tight_layout()
    return fig
