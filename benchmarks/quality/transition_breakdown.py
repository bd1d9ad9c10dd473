"""Where a model's hits come from: test rows split by whether train holds the row's transition
(last history item -> target), each model beside the first-order Markov chain.

    python benchmarks/quality/transition_breakdown.py data/office \
        data/office/07_model_output/sft/test_predictions.parquet \
        data/office/07_model_output/rl/test_predictions.parquet \
        [--model data/office/06_models/sft_model --train-rows 1000] [--out breakdown.json]

DATA is an environment's data root (02_intermediate/items.parquet, 03_primary/*_sequences.parquet).
Groups of test rows: `seen` (train holds the transition), `other successor` (the last item has train
successors, none of them the target), `no successor`. Per group and model: rows, HR@1, HR@10,
NDCG@10, and the group's part of the model's NDCG@10 over all rows (the parts add up to it).
Over all rows, each model against the chain: B − A on HR@10 and NDCG@10 with a 95% paired-bootstrap
interval (`singer_rec.metrics.paired_bootstrap`), the per-seed check of "above the chain".
With --model (a model folder), the model also ranks a seeded sample of train rows, the rows it was
trained on: how much of its training data it reproduces, beside the Markov chain's in-sample numbers.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from singer_rec.baselines.sequences import ItemIndex, encode_sequences
from singer_rec.baselines.training import markov_ranks, markov_transitions, popularity_scores
from singer_rec.metrics import hit_rank, paired_bootstrap, per_row_gain

ROOT = Path(__file__).resolve().parents[2]
GROUPS = ("seen", "other successor", "no successor")
MAX_HISTORY = 10  # only the last item matters to the Markov chain


def transition_groups(transitions, last_items: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Each row's group name; ``last_items`` are item indices, ``targets`` item indices (1-based)."""
    seen = np.asarray(transitions[last_items, targets - 1]).ravel() > 0
    has_successor = np.asarray(transitions[last_items].sum(axis=1)).ravel() > 0
    return np.where(seen, GROUPS[0], np.where(has_successor, GROUPS[1], GROUPS[2]))


def group_table(groups: np.ndarray, ranks: dict[str, list[int | None]]) -> dict[str, dict]:
    """``{group: {model: {rows, HR@1, HR@10, NDCG@10, NDCG@10 part}}}`` with an ``all`` group."""
    gains = {model: {metric: per_row_gain(model_ranks, metric) for metric in ("HR@1", "HR@10", "NDCG@10")}
             for model, model_ranks in ranks.items()}
    out = {}
    for group in ("all", *GROUPS):
        mask = np.ones(len(groups), bool) if group == "all" else groups == group
        rows = int(mask.sum())
        out[group] = {
            model: {"rows": rows,
                    **{metric: float(gain[mask].mean()) if rows else 0.0 for metric, gain in per_metric.items()},
                    "NDCG@10 part": float(per_metric["NDCG@10"][mask].sum() / len(groups))}
            for model, per_metric in gains.items()
        }
    return out


def markdown(table: dict[str, dict]) -> str:
    lines = ["| rows | model | n | HR@1 | HR@10 | NDCG@10 | part of NDCG@10 |", "|---|---|---|---|---|---|---|"]
    for group, models in table.items():
        for model, m in models.items():
            lines.append(f"| {group} | {model} | {m['rows']} | {m['HR@1']:.3f} | {m['HR@10']:.3f} | "
                         f"{m['NDCG@10']:.4f} | {m['NDCG@10 part']:.4f} |")
    return "\n".join(lines)


def against_chain(ranks: dict[str, list[int | None]], chain: str = "Markov chain") -> dict[str, dict]:
    """``{model: {metric: paired bootstrap of model − chain}}`` for HR@10 and NDCG@10 over all rows."""
    return {model: {metric: paired_bootstrap(ranks[chain], model_ranks, metric) for metric in ("HR@10", "NDCG@10")}
            for model, model_ranks in ranks.items() if model != chain}


def prediction_ranks(predictions: pd.DataFrame) -> list[int | None]:
    """Each row's target rank in its ``ranked_items`` (None when absent)."""
    return [hit_rank(list(items), target) for items, target in zip(predictions["ranked_items"], predictions["target"])]


def read_ranks(path: Path, test: pd.DataFrame) -> list[int | None]:
    frame = pd.read_parquet(path, columns=["user_id", "target", "ranked_items"])
    if len(frame) != len(test) or not (frame["target"].astype(str).values == test["target"].astype(str).values).all():
        raise ValueError(f"{path}: its rows are not the test split's rows in order ({len(frame)} and {len(test)} rows)")
    return prediction_ranks(frame)


def train_row_check(model: Path, train: pd.DataFrame, rows: int, transitions, popularity, index: ItemIndex) -> dict:
    """The model and the Markov chain (in-sample) on ``rows`` seeded train rows."""
    from singer_rec.pipelines.evaluate.nodes import predict_next_items

    sample = train.sample(min(rows, len(train)), random_state=0).reset_index(drop=True)
    params = yaml.safe_load((ROOT / "conf/base/parameters_evaluate.yml").read_text())["evaluate"]
    model_ranks = prediction_ranks(predict_next_items(model, sample, params, "train_sequences"))
    encoded = encode_sequences(sample, index, MAX_HISTORY, name="train_sequences")
    chain_ranks = list(markov_ranks(transitions, popularity, encoded))
    return {"rows": len(sample), "model": str(model),
            "model_metrics": {k: float(per_row_gain(model_ranks, k).mean()) for k in ("HR@1", "HR@10")},
            "markov_in_sample": {k: float(per_row_gain(chain_ranks, k).mean()) for k in ("HR@1", "HR@10")}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path, help="data root of an environment, e.g. data/office")
    parser.add_argument("predictions", type=Path, nargs="*", help="test_predictions.parquet files")
    parser.add_argument("--model", type=Path, help="a model folder to rank --train-rows train rows with")
    parser.add_argument("--train-rows", type=int, default=1000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    items = pd.read_parquet(args.data / "02_intermediate/items.parquet", columns=["item_id"])
    train, test = (pd.read_parquet(args.data / f"03_primary/{s}_sequences.parquet") for s in ("train", "test"))
    index = ItemIndex(items["item_id"].tolist())
    encoded_train = encode_sequences(train, index, MAX_HISTORY, name="train_sequences")
    encoded_test = encode_sequences(test, index, MAX_HISTORY, name="test_sequences")
    transitions = markov_transitions(encoded_train, index.num_items)
    popularity = popularity_scores(encoded_train, index.num_items)
    ranks = {"Markov chain": list(markov_ranks(transitions, popularity, encoded_test))}
    for path in args.predictions:
        ranks[path.parent.name] = read_ranks(path, test)
    groups = transition_groups(transitions, encoded_test.histories[:, -1].numpy().copy(), encoded_test.targets.numpy())
    result = {"data": str(args.data), "test_rows": len(test), "groups": group_table(groups, ranks)}
    print(markdown(result["groups"]))
    result["against_markov"] = against_chain(ranks)
    for model, per_metric in result["against_markov"].items():
        print(model, "minus the Markov chain:", ", ".join(
            f"{metric} {d['mean']:+.4f} [{d['ci95_low']:+.4f}, {d['ci95_high']:+.4f}]" for metric, d in per_metric.items()))
    if args.model:
        result["train_rows"] = train_row_check(args.model, train, args.train_rows, transitions, popularity, index)
        print(json.dumps(result["train_rows"], indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
