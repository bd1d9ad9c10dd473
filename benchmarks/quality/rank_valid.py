"""Rank every row of the valid split with one or more model folders: the model selection that the
500-row valid samples of SFT and RL are too small for.

    python benchmarks/quality/rank_valid.py data/office \
        data/office/06_models/sft_model data/office/06_models/ablations/sft-semantic/sft_model \
        [--env office] [--rows N] [--out valid.json]

Each MODEL is a model folder or a versioned dataset folder (its latest version). The ranking is the
evaluate stage's `evaluate_valid` (constrained beam search over the model's SID map) with the
environment's `evaluate` parameters and `valid_max_rows` set to all rows (or `--rows`). With two or
more models, each one after the first is paired with the first: B − A with a 95% bootstrap interval
over the same valid rows. `--split test` ranks the test split the same way: for reporting a model
that valid has already selected, never for choosing one.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or loaded by path (tests)
from paired_bootstrap import bootstrap_differences, ranks_of, rounded  # noqa: E402

from singer_rec.metrics import metrics_from_ranks  # noqa: E402
from singer_rec.pipelines.evaluate.nodes import evaluate_config, predict_next_items  # noqa: E402
from singer_rec.recommend import resolve_model_folder  # noqa: E402
from singer_rec.settings import project_parameters  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SHOWN = ("HR@5", "NDCG@5", "HR@10", "NDCG@10")


def evaluate_parameters(env: str) -> dict:
    """The environment's ``evaluate`` parameters (conf/base with conf/<env> over it, merged as ``kedro run`` merges)."""
    return project_parameters(ROOT / "conf", env)["evaluate"]


def valid_ranks(model: Path, sequences: pd.DataFrame, params: dict, rows: int | None,
                split: str = "valid") -> list[int | None]:
    """The target's 1-based rank per row of ``split`` (None: not among the ranked items)."""
    config = evaluate_config({**params, "valid_max_rows": rows})
    predictions = predict_next_items(model, sequences, config, f"{split}_sequences", config.valid_max_rows)
    return ranks_of(predictions)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path, help="the environment's data folder, e.g. data/office")
    parser.add_argument("models", type=Path, nargs="+", help="model folders (or versioned folders)")
    parser.add_argument("--env", help="the conf environment of the evaluate parameters (default: the data folder's name)")
    parser.add_argument("--rows", type=int, help="the first N rows only (default: all)")
    parser.add_argument("--split", choices=("valid", "test"), default="valid",
                        help="test: to report models already selected on valid")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--out", type=Path, help="write the metrics (and paired differences) as json")
    args = parser.parse_args(argv)
    try:
        folders = [resolve_model_folder(m) for m in args.models]
        path = args.data / "03_primary" / f"{args.split}_sequences.parquet"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no {args.split} split (run the split stage of that environment)")
        sequences = pd.read_parquet(path)
        params = evaluate_parameters(args.env or args.data.name)
    except (OSError, KeyError, ValueError) as error:
        print(f"rank_valid: {error}", file=sys.stderr)
        return 2
    ranks = {str(folder): valid_ranks(folder, sequences, params, args.rows, args.split) for folder in folders}
    names = list(ranks)
    out = {"data": str(args.data), "split": args.split, "rows": len(ranks[names[0]]), "models": {}}
    for name in names:
        metrics = metrics_from_ranks(ranks[name])
        out["models"][name] = {args.split: {m: round(metrics[m], 5) for m in SHOWN}}
        if name != names[0]:
            out["models"][name]["minus_first"] = rounded(
                bootstrap_differences(ranks[names[0]], ranks[name], args.resamples, metrics=SHOWN))
    for name, entry in out["models"].items():
        line = "  ".join(f"{m} {v:.4f}" for m, v in entry[args.split].items())
        if "minus_first" in entry:
            d = entry["minus_first"]["NDCG@10"]
            line += f"  ΔNDCG@10 {d['mean']:+.4f} [{d['ci95_low']:+.4f}, {d['ci95_high']:+.4f}]"
        print(f"{name}: {line}")
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
