"""Training curves: every metric a run logged at several steps, one small panel each.

``metric_histories(client, run_id)`` reads them from MLflow (the SFT loss, the RL reward, hit
rate and KL, ... whatever the training process logged per step) and ``curves_figure`` draws them.
The MLflow hook logs the figure as ``training_curves.png`` into each ``train`` node's child run.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

MAX_PANELS = 16
COLUMNS = 4


def metric_histories(client, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """``{metric: [(step, value), ...]}`` for the run's metrics logged at two or more steps, by name."""
    run = client.get_run(run_id)
    curves = {}
    for key in sorted(run.data.metrics):
        points = sorted({(m.step, m.value) for m in client.get_metric_history(run_id, key)})
        if len({step for step, _ in points}) >= 2:
            curves[key] = points
    return curves


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
