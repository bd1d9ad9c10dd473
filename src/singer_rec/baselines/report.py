"""The experiment report: every method's test metrics in the paper's Table 1 layout.

One row per method of the paper's table (and ours): our run's six metrics and wall time, with the
paper's published numbers (trained on the full MiniOneRec train split) beside them and again as a
separate, clearly labelled block. A method with no result in this run reads 'not run'.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd

from singer_rec.metrics import METRIC_NAMES

METRICS = list(METRIC_NAMES)  # the paper's column order
OTHER_GROUP = "Other"
WALL = "wall_time_s"
RUN, NOT_RUN = "run", "not run"
PAPER_PREFIX = "paper "
TABLE1_COLUMNS = ["group", "method", "status", *METRICS, WALL, *(PAPER_PREFIX + m for m in METRICS)]


def _check_metrics(metrics: Mapping, source: str) -> dict[str, float]:
    missing = [m for m in METRICS if m not in metrics]
    if missing:
        raise ValueError(f"{source}: missing metric(s) {missing}; expected keys {METRICS}")
    return {m: float(metrics[m]) for m in METRICS}


def _wall_time(metrics: Mapping) -> float:
    value = metrics.get("wall_time_s")
    return float(value) if value is not None and not pd.isna(value) else math.nan


def method_rows(baseline_metrics: pd.DataFrame | None, model_metrics: Mapping[str, Mapping | None]) -> list[dict]:
    """Rows (method, six metrics, wall time) from the baselines table and the models' metric dicts, skipping absent ones."""
    rows = []
    if baseline_metrics is not None:
        if "method" not in baseline_metrics.columns:
            raise ValueError("baseline_metrics: missing column 'method'")
        for position, record in enumerate(baseline_metrics.to_dict("records")):
            rows.append({"method": str(record["method"]), **_check_metrics(record, f"baseline_metrics row {position}"),
                         WALL: _wall_time(record)})
    for method, metrics in model_metrics.items():
        if metrics is not None:
            rows.append({"method": method, **_check_metrics(metrics, f"{method} test metrics"), WALL: _wall_time(metrics)})
    return rows


def _layout(groups: Mapping[str, Sequence[str]], anchors: Mapping[str, Mapping[str, Sequence[float]]] | None
            ) -> list[tuple[str, str]]:
    """(group, method) in Table 1 order: ``groups`` first, then any anchored method they leave out."""
    layout = [(group, method) for group, methods in groups.items() for method in methods]
    listed = {method for _, method in layout}
    for group, methods in (anchors or {}).items():
        layout += [(group, method) for method in methods if method not in listed]
    if len({m for _, m in layout}) != len(layout):
        raise ValueError(f"report.groups lists a method twice: {[m for _, m in layout]}")
    return layout


def table1(rows: Sequence[Mapping], groups: Mapping[str, Sequence[str]],
           anchors: Mapping[str, Mapping[str, Sequence[float]]] | None = None) -> pd.DataFrame:
    """The paper's Table 1 layout: one row per method with our numbers and the paper's beside them.

    Methods come in the order of ``groups`` (group -> methods), then anchored methods the groups
    leave out, then our methods listed nowhere (group 'Other'). A listed method without a result
    has ``status`` 'not run' and empty metrics; ``paper <metric>`` columns hold the anchors (empty
    without one).
    """
    by_method = {r["method"]: r for r in rows}
    if len(by_method) != len(rows):
        raise ValueError(f"the same method appears twice in the results: {[r['method'] for r in rows]}")
    published = {method: values for methods in (anchors or {}).values() for method, values in methods.items()}
    layout = _layout(groups, anchors)
    listed = {method for _, method in layout}
    layout += [(OTHER_GROUP, r["method"]) for r in rows if r["method"] not in listed]
    records = []
    for group, method in layout:
        ours = by_method.get(method)
        record = {"group": group, "method": method, "status": RUN if ours else NOT_RUN,
                  **{m: ours[m] if ours else math.nan for m in METRICS}, WALL: ours[WALL] if ours else math.nan}
        values = published.get(method)
        if values is not None and len(values) != len(METRICS):
            raise ValueError(f"anchor {method}: {len(values)} values, expected {len(METRICS)} ({METRICS})")
        record.update({f"{PAPER_PREFIX}{m}": float(v) for m, v in zip(METRICS, values)} if values
                      else {f"{PAPER_PREFIX}{m}": math.nan for m in METRICS})
        records.append(record)
    return pd.DataFrame(records, columns=TABLE1_COLUMNS)


def _number(value: float, decimals: int = 4) -> str:
    return "" if pd.isna(value) else f"{value:.{decimals}f}"


def _seconds(value: float) -> str:
    return "" if pd.isna(value) else f"{value:.1f}" if value < 10 else f"{value:.0f}"


def markdown_block(table: pd.DataFrame, columns: Sequence[str], headers: Sequence[str],
                   bold_best: Sequence[str] = (), mark_not_run: bool = True) -> str:
    """A markdown table of ``columns`` (4 decimals; a ``wall_time_s`` column in whole seconds).

    The group is shown on its first row only; the best value of each ``bold_best`` column is bold;
    with ``mark_not_run`` a row whose ``status`` is 'not run' says so in its first cell.
    """
    best = {c: table[c].max() for c in bold_best} if len(table) else {}
    lines = ["| Group | Method | " + " | ".join(headers) + " |", "|---|---|" + "---:|" * len(headers)]
    previous_group = None
    for record in table.to_dict("records"):
        group = record["group"] if record["group"] != previous_group else ""
        previous_group = record["group"]
        cells = []
        for column in columns:
            text = _seconds(record[column]) if column == WALL else _number(record[column])
            cells.append(f"**{text}**" if column in best and record[column] == best[column] else text)
        if mark_not_run and record.get("status") == NOT_RUN:
            cells[0] = NOT_RUN
        lines.append(f"| {group} | {record['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report_markdown(table: pd.DataFrame, title: str, missing: Sequence[str], anchors_label: str | None = None) -> str:
    """Table 1 with our numbers (and the paper's HR@10/NDCG@10 beside when anchored), then the paper's full block."""
    anchored = anchors_label is not None and table[PAPER_PREFIX + METRICS[0]].notna().any()
    beside = [PAPER_PREFIX + "HR@10", PAPER_PREFIX + "NDCG@10"] if anchored else []
    columns = [*METRICS, WALL, *beside]
    headers = [*METRICS, "wall s", *(f"paper {m.removeprefix(PAPER_PREFIX)}" for m in beside)]
    parts = [f"# Results: {title}", "",
             "Our runs: the same train/valid/test splits and the same metric code for every method "
             "(HR@K, NDCG@K at item level over the full item set); wall s = the method's training + test "
             "time where it is recorded. Best value per column in bold; 'not run' = no result in this run.", "",
             markdown_block(table, columns, headers, bold_best=METRICS)]
    if missing:
        parts += ["", "Not in this run (input absent): " + ", ".join(missing) + "."]
    if anchored:
        published = table[table[PAPER_PREFIX + METRICS[0]].notna()]
        parts += ["", f"## Published numbers: paper Table 1, {anchors_label}", "",
                  "Trained on the full MiniOneRec train split (the data here holds only part of it): "
                  "a reference for the ordering of methods, not comparable in absolute terms.", "",
                  markdown_block(published, [PAPER_PREFIX + m for m in METRICS], METRICS,
                                 bold_best=[PAPER_PREFIX + m for m in METRICS], mark_not_run=False)]
    return "\n".join(parts) + "\n"


def bar_chart(table: pd.DataFrame, title: str, metrics: Sequence[str] = ("HR@10", "NDCG@10")):
    """Grouped bars of ``metrics`` per method that ran; returns a matplotlib Figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ours = table[table["status"] == RUN]
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
