"""Mean ± sd over seeds of the evaluate stage's metrics files, as a markdown table.

    python benchmarks/quality/seed_summary.py \
        --model "SFT" seed42/08_reporting/sft/test_metrics.json seed43/08_reporting/sft/test_metrics.json ... \
        --model "SFT + SINGER RL" seed42/08_reporting/rl/test_metrics.json ... [--out summary.json]

One row per model: each metric's mean over the given files (one file per seed) and its sample
standard deviation (n − 1), the spread the docs quote as "mean ± sd of 3 seeds". Every file of a
model must hold the same number of test rows (`n`), so that no seed was scored on fewer rows.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from singer_rec.metrics import METRIC_NAMES

METRICS = METRIC_NAMES


def summarise(files: list[Path], metrics: tuple[str, ...] = METRICS) -> dict:
    """Per-metric mean and sample sd (0.0 for a single seed) over one model's metrics files."""
    if not files:
        raise ValueError("no metrics files given")
    runs = []
    for path in files:
        run = json.loads(Path(path).read_text())
        missing = [m for m in (*metrics, "n") if m not in run]
        if missing:
            raise ValueError(f"{path}: no field {', '.join(missing)} (an evaluate stage's *_metrics.json?)")
        runs.append(run)
    rows = {run["n"] for run in runs}
    if len(rows) != 1:
        raise ValueError(f"the files were scored on different numbers of rows {sorted(rows)}: {[str(f) for f in files]}")
    out = {"seeds": len(runs), "n": rows.pop(), "files": [str(f) for f in files]}
    for metric in metrics:
        values = [float(run[metric]) for run in runs]
        out[metric] = {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                       "values": values}
    return out


def markdown(summaries: dict[str, dict], metrics: tuple[str, ...] = METRICS) -> str:
    lines = ["| model | seeds | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for label, summary in summaries.items():
        cells = [f"{summary[m]['mean']:.4f} ± {summary[m]['sd']:.4f}" for m in metrics]
        lines.append(f"| {label} | {summary['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", nargs="+", action="append", required=True, metavar=("LABEL", "FILE"),
                        help="a row label followed by its metrics files, one per seed")
    parser.add_argument("--out", type=Path, help="also write the summary as json")
    args = parser.parse_args(argv)
    try:
        summaries = {}
        for label, *files in args.model:
            summaries[label] = summarise([Path(f) for f in files])
    except (OSError, ValueError) as error:
        print(f"seed_summary: {error}", file=sys.stderr)
        return 2
    print(markdown(summaries))
    if args.out:
        args.out.write_text(json.dumps(summaries, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
