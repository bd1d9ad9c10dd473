"""Training curves: every metric a run logged at several steps, one small panel each.

``metric_histories(client, run_id)`` reads them from MLflow (the SFT loss, the RL reward, hit
rate and KL, ... whatever the training process logged per step) and ``curves_figure`` draws them.
The MLflow hook logs the figure as ``training_curves.png`` into each ``train`` node's child run.

Without MLflow, ``sft_curves`` and ``rl_curves`` take the same shape of curves from a run's own
record (the SFT model folder's evaluations, the RL history); the sft and rl pipelines draw them
into ``08_reporting/<stage>/training_curves.png``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

MAX_PANELS = 16
COLUMNS = 4
# panel name -> key of one evaluation of an SFT run (``result["valid_curve"]``) / one RL history step
SFT_CURVES = {"train_loss": "train_loss", "valid_loss": "valid_loss", "valid_NDCG@10": "NDCG@10",
              "valid_HR@10": "HR@10"}
RL_CURVES = {"mean_reward": "mean_reward", "hit_rate": "hit_rate", "zero_advantage_fraction": "zero_advantage_fraction",
             "kl": "kl"}
RL_VALID_CURVES = {"valid_NDCG@10": "NDCG@10", "valid_HR@10": "HR@10"}


def metric_histories(client, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """``{metric: [(step, value), ...]}`` for the run's metrics logged at two or more steps, by name."""
    run = client.get_run(run_id)
    curves = {}
    for key in sorted(run.data.metrics):
        points = sorted({(m.step, m.value) for m in client.get_metric_history(run_id, key)})
        if len({step for step, _ in points}) >= 2:
            curves[key] = points
    return curves


def records_curves(records: Sequence[Mapping[str, object]], columns: Mapping[str, str]) -> dict[str, list[tuple[int, float]]]:
    """``{panel: [(step, value), ...]}`` from per-step records (``{"step": s, key: value, ...}``);
    a record without the key (or with null) adds no point, a panel without points is left out."""
    curves = {}
    for name, key in columns.items():
        points = [(int(r["step"]), float(r[key])) for r in records if r.get(key) is not None]
        if points:
            curves[name] = points
    return curves


def sft_curves(valid_curve: Sequence[Mapping[str, object]]) -> dict[str, list[tuple[int, float]]]:
    """Train loss, valid loss, valid NDCG@10 and HR@10 at each evaluation of an SFT run."""
    return records_curves(valid_curve, SFT_CURVES)


def rl_curves(history: Sequence[Mapping[str, object]],
              valid_curve: Sequence[Mapping[str, object]] | None = None) -> dict[str, list[tuple[int, float]]]:
    """Mean rollout reward, hit rate and KL at each step of an RL run; valid NDCG@10 and HR@10 at
    each step it ranked valid (``valid_curve``, step 0 = the start model)."""
    return records_curves(history, RL_CURVES) | records_curves(valid_curve or [], RL_VALID_CURVES)


def curves_figure(curves: Mapping[str, Sequence[tuple[int, float]]], title: str = ""):
    """A matplotlib figure with one panel per curve (the first :data:`MAX_PANELS` by name)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never a display
    import matplotlib.pyplot as plt

    names = sorted(curves)[:MAX_PANELS]
    if not names:
        raise ValueError("no curve to draw: no metric was logged at two or more steps")
    columns = min(COLUMNS, len(names))
    rows = math.ceil(len(names) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.4 * rows), squeeze=False)
    for axis, name in zip(axes.flat, names):
        steps, values = zip(*curves[name])
        axis.plot(steps, values, linewidth=1.2, marker="." if len(steps) <= 30 else None)
        axis.set_title(name, fontsize=9)
        axis.set_xlabel("step", fontsize=8)
        axis.tick_params(labelsize=7)
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(names):]:
        axis.set_visible(False)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure
