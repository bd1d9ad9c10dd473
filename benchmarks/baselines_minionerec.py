"""Run the baselines on the paper's MiniOneRec splits in ../shared (Industrial or Office), on CPU.

Reads the valid/test CSVs and the recovered partial train CSV directly (the same tables the
`minionerec` ingest source produces: user_id, history = item ids oldest first, target), then calls
the baselines pipeline's node functions, so the numbers are the pipeline's. Prints the table and
writes it as csv.

    python benchmarks/baselines_minionerec.py --dataset Industrial_and_Scientific --out /tmp/industrial_baselines.csv
    python benchmarks/baselines_minionerec.py --methods sasrec --set sasrec.training.patience=15

`--set KEY=VALUE` (repeatable) overrides one entry of the `baselines` parameters by its dotted
key; VALUE is parsed as YAML (`--set training.learning_rates=[0.001]`).
"""
from __future__ import annotations

import argparse
import ast
import json
import logging
import time
from pathlib import Path

import pandas as pd
import yaml

from singer_rec.pipelines.baselines import nodes

ROOT = Path(__file__).resolve().parents[1]
MINIONEREC = ROOT.parent / "shared" / "data" / "amazon18" / "minionerec"
ANCHORS = {"Industrial_and_Scientific": "Industrial", "Office_Products": "Office"}  # paper_table1 blocks
SPLIT_FILES = {
    "train": "derived/{name}.train_recovered_partial.csv",
    "valid": "valid/{name}_5_2016-10-2018-11.csv",
    "test": "test/{name}_5_2016-10-2018-11.csv",
}


def load_split(path: Path) -> pd.DataFrame:
    raw = pd.read_csv(path, dtype={"user_id": str, "item_id": str})
    history = [[str(i) for i in ast.literal_eval(h)] for h in raw["history_item_id"]]
    return pd.DataFrame({"user_id": raw["user_id"], "history": history, "target": raw["item_id"].astype(str),
                         "timestamp": range(len(raw))})


def apply_override(params: dict, assignment: str) -> None:
    """Set ``a.b.c=value`` (value parsed as YAML) inside nested ``params``, creating missing levels."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise SystemExit(f"--set expects KEY=VALUE, got {assignment!r}")
    *parents, leaf = key.split(".")
    node = params
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SystemExit(f"--set {key}: {part!r} is not a mapping")
    node[leaf] = yaml.safe_load(raw)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="Industrial_and_Scientific")
    parser.add_argument("--methods", default="popularity,markov,gru4rec,caser,sasrec")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--loss", choices=["bce", "ce"], default=None, help="override baselines.training.loss")
    parser.add_argument("--report", type=Path, default=None,
                        help="also write the report's Table 1 markdown (these baselines, the rest 'not run')")
    parser.add_argument("--extra", type=Path, action="append", default=[],
                        help="csv with more baseline_metrics rows for --report (e.g. an earlier run's --out)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a dotted key of the baselines parameters (YAML value); repeatable")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    params = yaml.safe_load((ROOT / "conf/base/parameters_baselines.yml").read_text())["baselines"]
    if args.loss:
        params["training"]["loss"] = args.loss
    for assignment in args.set:
        apply_override(params, assignment)
    items = pd.DataFrame({"item_id": list(json.loads((MINIONEREC / f"index/{args.dataset}.item.json").read_text()))})
    splits = {k: load_split(MINIONEREC / v.format(name=args.dataset)) for k, v in SPLIT_FILES.items()}
    print({k: len(v) for k, v in splits.items()}, "items", len(items))
    results = {}
    for method in args.methods.split(","):
        started = time.perf_counter()
        if method in ("popularity", "markov"):
            train = getattr(nodes, f"train_{method}")
            results[f"{method}_metrics"] = train(items, splits["train"], splits["test"], params)
        else:
            results[f"{method}_metrics"] = nodes.train_sequential_baseline(
                method, items, splits["train"], splits["valid"], splits["test"], params, args.seed)
        print(method, round(time.perf_counter() - started, 1), "s", results[f"{method}_metrics"], flush=True)
    table = nodes.collect_baseline_metrics(**results)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if args.out:
        table.to_csv(args.out, index=False)
    if args.report:
        args.report.write_text(table1_markdown(pd.concat([table, *map(pd.read_csv, args.extra)]), args.dataset))


def table1_markdown(baseline_metrics: pd.DataFrame, dataset: str) -> str:
    """The report node's Table 1 for these baseline rows, with the paper's anchors of ``dataset``."""
    from singer_rec.pipelines.report.nodes import build_report

    conf = yaml.safe_load((ROOT / "conf/base/parameters_report.yml").read_text())
    anchors = ANCHORS.get(dataset)
    params = {**conf["report"], "title": f"{dataset} (MiniOneRec splits, partial train)",
              "anchors_dataset": anchors, "include": ["baselines"]}
    return build_report(baseline_metrics, None, None, params, conf["paper_table1"])[1]


if __name__ == "__main__":
    main()
