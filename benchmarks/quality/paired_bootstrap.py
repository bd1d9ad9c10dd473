"""Paired comparison of two models' test predictions on the same rows (e.g. SFT vs SFT + RL).

    python benchmarks/quality/paired_bootstrap.py data/industrial/07_model_output/sft/test_predictions.parquet \
        data/industrial/07_model_output/rl/test_predictions.parquet [--out result.json]

Prints, for HR@K and NDCG@K (K = 3, 5, 10): both models' metric, B − A, a 95% paired-bootstrap
interval over test rows (2,000 resamples, seeded) and how many rows went up and down. The two
files must hold the same rows (user_id, target) in the same order.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from singer_rec.metrics import DEFAULT_KS, hit_rank, metrics_from_ranks, paired_bootstrap


def ranks_of(predictions: pd.DataFrame) -> list[int | None]:
    """The target's 1-based rank per row of a predictions frame (None: not among ``ranked_items``)."""
    return [hit_rank(list(items), target) for items, target in zip(predictions["ranked_items"], predictions["target"])]


def read_ranks(path: Path) -> tuple[pd.DataFrame, list[int | None]]:
    frame = pd.read_parquet(path, columns=["user_id", "target", "ranked_items"])
    return frame, ranks_of(frame)


def check_same_rows(frame_a: pd.DataFrame, path_a: Path, frame_b: pd.DataFrame, path_b: Path) -> None:
    """Paired comparisons need the same (user_id, target) rows in the same order."""
    keys = ["user_id", "target"]
    if not frame_a[keys].reset_index(drop=True).equals(frame_b[keys].reset_index(drop=True)):
        raise ValueError(f"{path_a} and {path_b} do not hold the same (user_id, target) rows in the same order "
                         f"({len(frame_a)} and {len(frame_b)} rows)")


def bootstrap_differences(ranks_a: list[int | None], ranks_b: list[int | None], resamples: int = 2000,
                          seed: int = 0, metrics: tuple[str, ...] | None = None) -> dict:
    """B − A with its paired-bootstrap interval per metric (default: HR and NDCG at every K)."""
    metrics = metrics or tuple(f"{name}@{k}" for k in DEFAULT_KS for name in ("HR", "NDCG"))
    return {metric: paired_bootstrap(ranks_a, ranks_b, metric, resamples, seed) for metric in metrics}


def rounded(differences: dict) -> dict:
    """``bootstrap_differences``' mean and interval per metric, rounded to 5 places (result files)."""
    return {m: {k: round(float(v[k]), 5) for k in ("mean", "ci95_low", "ci95_high")} for m, v in differences.items()}


def compare(path_a: Path, path_b: Path, resamples: int = 2000, seed: int = 0) -> dict:
    frame_a, ranks_a = read_ranks(path_a)
    frame_b, ranks_b = read_ranks(path_b)
    check_same_rows(frame_a, path_a, frame_b, path_b)
    return {"a": str(path_a), "b": str(path_b), "resamples": resamples, "seed": seed,
            "a_metrics": metrics_from_ranks(ranks_a), "b_metrics": metrics_from_ranks(ranks_b),
            "b_minus_a": bootstrap_differences(ranks_a, ranks_b, resamples, seed)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("a", type=Path, help="test_predictions.parquet of the reference model")
    parser.add_argument("b", type=Path, help="test_predictions.parquet of the compared model")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the result as json")
    args = parser.parse_args(argv)
    result = compare(args.a, args.b, args.resamples, args.seed)
    print(f"A = {args.a}\nB = {args.b}\nrows = {result['a_metrics']['n']}")
    print(f"{'metric':8} {'A':>7} {'B':>7} {'B-A':>8} {'95% interval':>20} {'up':>5} {'down':>5}")
    for metric, d in result["b_minus_a"].items():
        print(f"{metric:8} {result['a_metrics'][metric]:7.4f} {result['b_metrics'][metric]:7.4f} {d['mean']:+8.4f} "
              f"[{d['ci95_low']:+.4f}, {d['ci95_high']:+.4f}] {d['rows_up']:5d} {d['rows_down']:5d}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
