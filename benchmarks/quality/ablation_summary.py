"""The Fig. 4 ablation variants of one data folder against its SFT model and its SINGER run, paired.

    python benchmarks/quality/ablation_summary.py data/office beam sid-all acc \
        --label "Office seed 44" --out result.json --plot ablations.png

Reads what `kedro run --pipelines=ablations --namespaces=<variant>` and the recipe's own run wrote:
``07_model_output/{sft,rl,<variant>}/test_predictions.parquet`` and, per RL run, its
``train_report.json`` and ``train_history.json`` (``08_reporting/rl`` for SINGER,
``08_reporting/ablations/<variant>`` for a variant). For each variant: its test metrics, its RL
report, its valid curve, and the 95% paired-bootstrap intervals of variant − SFT and
variant − SINGER (benchmarks/quality/paired_bootstrap.py). Prints a markdown table (variants by
test NDCG@10, best first); ``--plot`` draws the valid curves beside the test differences.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or loaded by path (tests)
from paired_bootstrap import bootstrap_differences, check_same_rows, read_ranks, rounded  # noqa: E402

from singer_rec.metrics import metrics_from_ranks  # noqa: E402

SHOWN = ("HR@5", "NDCG@5", "HR@10", "NDCG@10")


def _differences(ranks_a: list, ranks_b: list, resamples: int) -> dict:
    """B − A on the shown metrics, rounded, with the interval of benchmarks/quality/paired_bootstrap.py."""
    return rounded(bootstrap_differences(ranks_a, ranks_b, resamples, metrics=SHOWN))


def _run_files(root: Path, variant: str) -> tuple[Path, Path]:
    folder = root / "08_reporting" / ("rl" if variant == "singer" else f"ablations/{variant}")
    return folder / "train_report.json", folder / "train_history.json"


def summarise(root: Path, variants: list[str], label: str, resamples: int = 2000) -> dict:
    """The summary of ``variants`` (names of ``ablations.definitions``) in data folder ``root``."""
    predictions = {name: root / "07_model_output" / name / "test_predictions.parquet"
                   for name in ["sft", "rl", *variants]}
    missing = [str(path) for path in predictions.values() if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"not run yet (no test predictions): {', '.join(missing)}")
    sft_frame, sft_ranks = read_ranks(predictions["sft"])
    ranks = {"sft": sft_ranks}  # each file read once; every model paired on the SFT model's rows
    for name in ["rl", *variants]:
        frame, ranks[name] = read_ranks(predictions[name])
        check_same_rows(sft_frame, predictions["sft"], frame, predictions[name])
    singer_minus_sft = _differences(ranks["sft"], ranks["rl"], resamples)
    out = {"label": label, "data": str(root), "resamples": resamples,
           "sft_test": metrics_from_ranks(ranks["sft"]), "singer_test": metrics_from_ranks(ranks["rl"]),
           "singer_minus_sft": singer_minus_sft, "variants": {}}
    for name in ["singer", *variants]:
        report_path, history_path = _run_files(root, name)
        report = json.loads(report_path.read_text()) if report_path.is_file() else {}
        history = json.loads(history_path.read_text()) if history_path.is_file() else {}
        entry = {"report": report, "valid_curve": history.get("valid_curve", [])}
        if name == "singer":
            entry |= {"test": out["singer_test"], "minus_sft": singer_minus_sft}
        else:
            entry |= {"test": metrics_from_ranks(ranks[name]),
                      "minus_sft": _differences(ranks["sft"], ranks[name], resamples),
                      "minus_singer": _differences(ranks["rl"], ranks[name], resamples)}
        out["variants"][name] = entry
    return out


def _interval(d: dict | None) -> str:
    return "" if d is None else f"{d['mean']:+.4f} [{d['ci95_low']:+.4f}, {d['ci95_high']:+.4f}]"


def markdown(summary: dict) -> str:
    """One row per model: SFT, then the RL runs by test NDCG@10, best first."""
    lines = ["| variant | HR@5 | NDCG@5 | HR@10 | NDCG@10 | NDCG@10 − SFT [95%] | NDCG@10 − SINGER [95%] "
             "| KL at the last step | RL min |", "|---|---|---|---|---|---|---|---|---|"]
    sft = summary["sft_test"]
    lines.append("| sft-only | " + " | ".join(f"{sft[m]:.4f}" for m in SHOWN) + " | | | | |")
    ranked = sorted(summary["variants"].items(), key=lambda kv: -kv[1]["test"]["NDCG@10"])
    for name, v in ranked:
        report = v["report"]
        kl = f"{report['last_kl']:.2f}" if "last_kl" in report else ""
        minutes = f"{report['wall_seconds'] / 60:.1f}" if "wall_seconds" in report else ""
        lines.append(f"| {name} | " + " | ".join(f"{v['test'][m]:.4f}" for m in SHOWN)
                     + f" | {_interval(v['minus_sft'].get('NDCG@10'))} | {_interval(v.get('minus_singer', {}).get('NDCG@10'))}"
                     + f" | {kl} | {minutes} |")
    return "\n".join(lines)


def plot(summary: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (curves, gaps) = plt.subplots(1, 2, figsize=(12, 4.5))
    ranked = sorted(summary["variants"].items(), key=lambda kv: kv[1]["test"]["NDCG@10"])
    palette = plt.get_cmap("tab20").colors  # more variants than the default cycle's 10 colours
    for i, (name, v) in enumerate(ranked):
        if v["valid_curve"]:
            curves.plot([p["step"] for p in v["valid_curve"]], [p["NDCG@10"] for p in v["valid_curve"]],
                        marker="o", lw=2.5 if name == "singer" else 1.2, label=name, color=palette[i % len(palette)])
    curves.set(xlabel="RL step", ylabel="valid NDCG@10 (the RL run's valid sample)",
               title="valid during RL (step 0 = the variant's start model)")
    curves.legend(fontsize=8)
    for row, (name, v) in enumerate(ranked):
        d = v["minus_sft"]["NDCG@10"]
        gaps.errorbar(d["mean"], row, xerr=[[d["mean"] - d["ci95_low"]], [d["ci95_high"] - d["mean"]]],
                      fmt="o", color="C3" if name == "singer" else "C0", capsize=3)
    gaps.axvline(0.0, color="grey", lw=1)
    gaps.set_yticks(range(len(ranked)), [name for name, _ in ranked])
    gaps.set(xlabel="test NDCG@10 − SFT (95% paired bootstrap)", title=f"{summary['label']}: test, all rows")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path, help="the environment's data folder, e.g. data/office")
    parser.add_argument("variants", nargs="+", help="names of ablations.definitions that were run")
    parser.add_argument("--label", default="")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--out", type=Path, help="write the summary as json")
    parser.add_argument("--plot", type=Path, help="write the figure (png)")
    args = parser.parse_args(argv)
    try:
        summary = summarise(args.data, args.variants, args.label or str(args.data), args.resamples)
    except (OSError, ValueError) as error:
        print(f"ablation_summary: {error}", file=sys.stderr)
        return 2
    print(markdown(summary))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1))
    if args.plot:
        plot(summary, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
