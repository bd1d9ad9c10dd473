"""The experiment report: every method's test metrics in the paper's Table 1 layout.

Our runs (same splits, same metric code) form one block; the paper's published numbers, which
were trained on the full MiniOneRec train split, form a separate, clearly labelled block.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

METRICS = ["HR@3", "NDCG@3", "HR@5", "NDCG@5", "HR@10", "NDCG@10"]  # the paper's column order
OURS_BLOCK = "this run"
ANCHOR_BLOCK = "paper Table 1 (full train split)"
TABLE_COLUMNS = ["block", "group", "method", *METRICS]
OTHER_GROUP = "Other"


def _check_metrics(metrics: Mapping, source: str) -> dict[str, float]:
    missing = [m for m in METRICS if m not in metrics]
    if missing:
        raise ValueError(f"{source}: missing metric(s) {missing}; expected keys {METRICS}")
    return {m: float(metrics[m]) for m in METRICS}


def method_rows(baseline_metrics: pd.DataFrame | None, model_metrics: Mapping[str, Mapping | None]) -> list[dict]:
    """Rows (method + six metrics) from the baselines table and the models' metric dicts, skipping absent ones."""
    rows = []
    if baseline_metrics is not None:
        if "method" not in baseline_metrics.columns:
            raise ValueError("baseline_metrics: missing column 'method'")
        for position, record in enumerate(baseline_metrics.to_dict("records")):
            rows.append({"method": str(record["method"]), **_check_metrics(record, f"baseline_metrics row {position}")})
    for method, metrics in model_metrics.items():
        if metrics is not None:
            rows.append({"method": method, **_check_metrics(metrics, f"{method} test metrics")})
    return rows


def grouped_table(rows: Sequence[Mapping], groups: Mapping[str, Sequence[str]], block: str) -> pd.DataFrame:
    """Rows ordered as in ``groups`` (group -> methods); unlisted methods follow under 'Other'."""
    by_method = {r["method"]: r for r in rows}
    if len(by_method) != len(rows):
        raise ValueError(f"the same method appears twice in the results: {[r['method'] for r in rows]}")
    ordered, listed = [], set()
    for group, methods in groups.items():
        for method in methods:
            listed.add(method)
            if method in by_method:
                ordered.append({"block": block, "group": group, **by_method[method]})
    ordered += [{"block": block, "group": OTHER_GROUP, **r} for r in rows if r["method"] not in listed]
    return pd.DataFrame(ordered, columns=TABLE_COLUMNS)


def anchor_table(anchors: Mapping[str, Mapping[str, Sequence[float]]]) -> pd.DataFrame:
    """Published numbers: group -> method -> six values in the paper's column order."""
    rows = []
    for group, methods in anchors.items():
        for method, values in methods.items():
            if len(values) != len(METRICS):
                raise ValueError(f"anchor {group}/{method}: {len(values)} values, expected {len(METRICS)} ({METRICS})")
            rows.append({"block": ANCHOR_BLOCK, "group": group, "method": method, **dict(zip(METRICS, map(float, values)))})
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def markdown_block(table: pd.DataFrame, bold_best: bool = True) -> str:
    """A markdown table: group shown on its first row only, 4 decimals, best value per column in bold."""
    best = {m: table[m].max() for m in METRICS} if bold_best and len(table) else {}
    lines = ["| Group | Method | " + " | ".join(METRICS) + " |", "|---|---|" + "---:|" * len(METRICS)]
    previous_group = None
    for record in table.to_dict("records"):
        group = record["group"] if record["group"] != previous_group else ""
        previous_group = record["group"]
        cells = [f"**{record[m]:.4f}**" if best and record[m] == best[m] else f"{record[m]:.4f}" for m in METRICS]
        lines.append(f"| {group} | {record['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report_markdown(ours: pd.DataFrame, anchors: pd.DataFrame | None, title: str, missing: Sequence[str],
                    anchors_label: str | None = None) -> str:
    parts = [f"# Results: {title}", "",
             "Our runs: the same train/valid/test splits and the same metric code for every method "
             "(HR@K, NDCG@K at item level over the full item set). Best value per column in bold.", "",
             markdown_block(ours)]
    if missing:
        parts += ["", "Not in this run (input absent): " + ", ".join(missing) + "."]
    if anchors is not None and len(anchors):
        parts += ["", f"## Published numbers: paper Table 1, {anchors_label}", "",
                  "Trained on the full MiniOneRec train split (the data here holds only part of it): "
                  "a reference for the ordering of methods, not comparable in absolute terms.", "",
                  markdown_block(anchors)]
    return "\n".join(parts) + "\n"


def bar_chart(ours: pd.DataFrame, title: str, metrics: Sequence[str] = ("HR@10", "NDCG@10")):
    """Grouped bars of ``metrics`` per method of our runs; returns a matplotlib Figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(ours) + 2), 3.8))
    x = np.arange(len(ours))
    width = 0.8 / len(metrics)
    for i, metric in enumerate(metrics):
        bars = ax.bar(x + (i - (len(metrics) - 1) / 2) * width, ours[metric], width, label=metric)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=1)
    ax.set_xticks(x, ours["method"], rotation=20, ha="right")
    ax.set_ylabel("test metric")
    ax.set_title(title)
    ax.legend()
    ax.margins(y=0.15)
    fig.tight_layout()
    return fig
