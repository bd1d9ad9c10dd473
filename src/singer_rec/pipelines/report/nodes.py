"""Thin nodes over singer_rec.baselines.report."""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from singer_rec.baselines import report
from singer_rec.params import from_params

logger = logging.getLogger(__name__)

# inputs holding one row per method (a table, or json keyed by method) and inputs of one model each
TABLE_INPUTS = ("baselines", "llm_baselines", "sdpo")
MODEL_INPUTS = ("sft", "rl", "minionerec")
INPUTS = TABLE_INPUTS + MODEL_INPUTS


@dataclass
class ReportParams:
    """The ``report`` block: which inputs, how the model results are named, and the rows in order."""

    title: str
    include: list[str]              # of INPUTS; an included input that is absent is named in the report
    model_names: dict[str, str]     # input -> method name (sft -> LC-Rec, rl -> SINGER, minionerec -> MiniOneRec)
    groups: dict[str, list[str]]    # group -> its methods, in order (the paper's Table 1)
    anchors_dataset: str | None = None  # the block of paper_table1 whose values stand beside ours

    def check(self, where: str) -> None:
        unknown = set(self.include) - set(INPUTS)
        if unknown:
            raise ValueError(f"{where}.include: unknown input(s) {sorted(unknown)}; expected {', '.join(INPUTS)}")


def method_table(metrics: pd.DataFrame | Mapping | list | None, source: str) -> pd.DataFrame | None:
    """Per-method metrics as a table with a ``method`` column: a table as it is, a json mapping
    ``{method: metrics}`` (``llm_baseline_metrics``, ``sdpo_metrics``) or a list of rows with ``method``."""
    if metrics is None or isinstance(metrics, pd.DataFrame):
        return metrics
    if isinstance(metrics, Mapping):
        bad = [m for m, values in metrics.items() if not isinstance(values, Mapping)]
        if bad:
            raise ValueError(f"{source}: expected {{method: {{metric: value}}}}; the entry of {bad[0]!r} is not a mapping")
        rows = [{"method": m, **values} for m, values in metrics.items()]
    elif isinstance(metrics, list) and all(isinstance(r, Mapping) and "method" in r for r in metrics):
        rows = list(metrics)
    else:
        raise ValueError(f"{source}: expected a table, {{method: metrics}} or a list of rows with 'method', "
                         f"got {type(metrics).__name__}")
    for row in rows:
        missing = [m for m in report.METRICS if m not in row]
        if missing:
            raise ValueError(f"{source}: {row['method']!r} lacks metric(s) {missing}; expected keys {report.METRICS}")
    return pd.DataFrame(rows)


def build_report(baseline_metrics: pd.DataFrame | None, sft_metrics: dict | None, rl_metrics: dict | None,
                 params: dict[str, Any] | ReportParams, paper_table1: dict[str, Any], llm_baseline_metrics: dict | None = None,
                 sdpo_metrics: dict | None = None, minionerec_metrics: dict | None = None):
    """Table 1 (csv), its markdown and a bar chart from whichever inputs are present.

    Rows follow ``params.groups`` (the paper's Table 1 order); a listed method without a result
    reads 'not run'. ``params.model_names`` names the model results (sft -> LC-Rec, rl -> SINGER,
    minionerec -> MiniOneRec: the ``minionerec`` ablation variant's test metrics) and how an absent
    input is named.

    ``params.include`` lists the inputs to use (baselines, llm_baselines, sdpo, sft, rl, minionerec); an
    included input that is absent is named in the report instead of failing; nothing present at all
    is an error. ``params.anchors_dataset`` (Industrial, Office or None) picks the block of
    ``paper_table1``.
    """
    params = from_params(ReportParams, params, "report")
    include, names = set(params.include), params.model_names
    inputs = {"baselines": baseline_metrics, "llm_baselines": method_table(llm_baseline_metrics, "llm_baseline_metrics"),
              "sdpo": method_table(sdpo_metrics, "sdpo_metrics"), "sft": sft_metrics, "rl": rl_metrics,
              "minionerec": minionerec_metrics}
    missing = [names.get(k, k) for k in INPUTS if k in include and inputs[k] is None]
    tables = [inputs[k] for k in TABLE_INPUTS if k in include and inputs[k] is not None]
    rows = report.method_rows(
        pd.concat(tables, ignore_index=True) if tables else None,
        {names[k]: inputs[k] for k in MODEL_INPUTS if k in include},
    )
    if not rows:
        raise ValueError("report: none of the included inputs (baseline_metrics, llm_baseline_metrics, sdpo_metrics, "
                         "sft/rl/minionerec test metrics) exists; run the baselines, llm_baselines, sdpo or evaluate pipelines first")
    if missing:
        logger.warning("report without: %s", ", ".join(missing))
    anchors_key = params.anchors_dataset
    if anchors_key and anchors_key not in paper_table1:
        raise ValueError(f"report.anchors_dataset: {anchors_key!r} is not in paper_table1 ({sorted(paper_table1)})")
    table = report.table1(rows, params.groups, paper_table1[anchors_key] if anchors_key else None)
    markdown = report.report_markdown(table, params.title, missing, anchors_key)
    return table, markdown, report.bar_chart(table, params.title)
