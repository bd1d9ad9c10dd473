"""Thin nodes over singer_rec.baselines.report."""
from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from singer_rec.baselines import report

logger = logging.getLogger(__name__)


def build_report(baseline_metrics: pd.DataFrame | None, sft_metrics: dict | None, rl_metrics: dict | None,
                 params: dict[str, Any], paper_table1: dict[str, Any]):
    """Results table (csv), its markdown and a bar chart from whichever inputs are present.

    ``params["include"]`` lists the inputs to use (baselines, sft, rl); an included input that is
    absent is named in the report instead of failing; nothing present at all is an error.
    ``params["anchors_dataset"]`` (Industrial, Office or None) picks the block of ``paper_table1``.
    """
    include = set(params["include"])
    unknown = include - {"baselines", "sft", "rl"}
    if unknown:
        raise ValueError(f"report.include: unknown input(s) {sorted(unknown)}; expected baselines, sft, rl")
    names = params["model_names"]
    inputs = {"baselines": baseline_metrics, "sft": sft_metrics, "rl": rl_metrics}
    missing = [names.get(k, k) for k in ("baselines", "sft", "rl") if k in include and inputs[k] is None]
    rows = report.method_rows(
        baseline_metrics if "baselines" in include else None,
        {names[k]: inputs[k] for k in ("sft", "rl") if k in include},
    )
    if not rows:
        raise ValueError("report: none of the included inputs (baseline_metrics, sft/rl test metrics) exists; "
                         "run the baselines or evaluate pipelines first")
    if missing:
        logger.warning("report without: %s", ", ".join(missing))
    ours = report.grouped_table(rows, params["groups"], report.OURS_BLOCK)
    anchors_key = params.get("anchors_dataset")
    if anchors_key and anchors_key not in paper_table1:
        raise ValueError(f"report.anchors_dataset: {anchors_key!r} is not in paper_table1 ({sorted(paper_table1)})")
    anchors = report.anchor_table(paper_table1[anchors_key]) if anchors_key else None
    markdown = report.report_markdown(ours, anchors, params["title"], missing, anchors_key)
    table = pd.concat([ours, anchors], ignore_index=True) if anchors is not None else ours
    return table, markdown, report.bar_chart(ours, params["title"])
