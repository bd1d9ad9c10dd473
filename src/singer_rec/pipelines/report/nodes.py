"""Thin nodes over singer_rec.baselines.report."""
from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from singer_rec.baselines import report

logger = logging.getLogger(__name__)


def build_report(baseline_metrics: pd.DataFrame | None, sft_metrics: dict | None, rl_metrics: dict | None,
                 params: dict[str, Any], paper_table1: dict[str, Any]):
    """Table 1 (csv), its markdown and a bar chart from whichever inputs are present.

    Rows follow ``params["groups"]`` (the paper's Table 1 order); a listed method without a result
    reads 'not run'. ``params["model_names"]`` names the sft and rl results (e.g. sft -> LC-Rec,
    rl -> SINGER, or MiniOneRec for an RL run with MiniOneRec's settings).

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
    anchors_key = params.get("anchors_dataset")
    if anchors_key and anchors_key not in paper_table1:
        raise ValueError(f"report.anchors_dataset: {anchors_key!r} is not in paper_table1 ({sorted(paper_table1)})")
    table = report.table1(rows, params["groups"], paper_table1[anchors_key] if anchors_key else None)
    markdown = report.report_markdown(table, params["title"], missing, anchors_key)
    return table, markdown, report.bar_chart(table, params["title"])
