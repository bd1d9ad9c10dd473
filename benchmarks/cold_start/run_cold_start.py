"""Cold start on Industrial: items the model never trained on, inserted with ``catalog_update``.

Three steps (each reads what the previous wrote under ``--out``, default ``data/cold_start``)::

    python benchmarks/cold_start/run_cold_start.py prepare            # ingest, embed, hold-out, SIDs, prompts
    OMP_NUM_THREADS=1 python benchmarks/cold_start/run_cold_start.py train --variant cold   # (a) without the held-out items
    OMP_NUM_THREADS=1 python benchmarks/cold_start/run_cold_start.py train --variant full   # (b) all items from the start
    python benchmarks/cold_start/run_cold_start.py finish             # catalog_update on (a), evaluate, table
    python benchmarks/cold_start/run_cold_start.py diagnose           # held-out rows: HR@20/50, first-code hits

* hold-out: a seeded 5% of Industrial's items. Variant ``cold`` builds its SIDs (balanced RQ-KMeans)
  from the other 95%, and its SFT data leaves out every train and valid row whose target is a held-out
  item; held-out items are also removed from the histories of the rows kept (a row whose history
  becomes empty is dropped), so the model never sees them. The item tasks (SID<->title,
  description->SID) cover the 95% only.
* variant ``full``: the same recipe on all items and rows (the "retrain with everything" reference).
* ``finish``: the held-out items go through the ``catalog_update`` nodes (the same encoder, the cold
  variant's codebooks, new SID token rows at the mean) into a new model folder; HR@10/NDCG@10 on the
  test rows whose target is a held-out item for (a) the updated model, (b) the full model and
  (c) popularity (train target counts of all items: it sees the held-out items' train rows, which
  (a) does not); and the overall test metrics (the first ``--overall-rows`` test rows) of (a) and (b).

The SFT recipe is the CPU recipe (conf/cpu_budget.yml) reduced to fit a shared 2-core machine:
the small scratch model (hidden 128 x 2 layers), ``max_steps`` optimiser steps of 128, one torch
thread, valid ranking on 200 rows; no RL. Items are embedded (MiniLM, Industrial's encoder) from
their titles only, for the catalogue and the new items alike. Results: ``<out>/results.json`` and ``<out>/table.md``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RAW = ROOT.parent / "shared" / "data" / "amazon18" / "minionerec"
ENV = "industrial"
HOLDOUT_SHARE = 0.05
KS = [1, 3, 5, 10]

logger = logging.getLogger("cold_start")


def recipe(max_steps: int) -> dict:
    """The reduced CPU recipe (the same for both variants), as parameter overrides."""
    return {
        "sft": {
            "model": {"scratch": {"hidden_size": 128, "num_hidden_layers": 2, "intermediate_size": 384,
                                  "dropout": 0.1}},
            "train": {"learning_rate": 1.0e-3, "weight_decay": 0.01, "batch_size": 128, "micro_batch_size": 32,
                      "epochs": 10, "max_steps": int(max_steps), "patience": 3, "eval_every": max(1, max_steps // 4),
                      "max_valid_samples": 300, "valid_ranking_rows": 200, "num_threads": 1,
                      "checkpoint_every": 100},
        },
        "evaluate": {"device": "cpu", "num_beams": 20, "batch_size": 32},
        # titles only: MiniLM over title + description took ~28 s a batch of 64 on the shared machine
        "embed": {"text_fields": ["title"], "max_chars": 300, "device": "cpu"},
    }


def parameters(max_steps: int) -> dict:
    """Industrial's parameters with conf/cpu_budget.yml's and the reduced recipe's merged over them."""
    import yaml

    from singer_rec.cli import merge_params
    from singer_rec.settings import project_parameters

    params = project_parameters(ROOT / "conf", ENV)
    budget = (yaml.safe_load((ROOT / "conf" / "cpu_budget.yml").read_text(encoding="utf-8")) or {})["run"]["params"]
    return merge_params(merge_params(params, budget), recipe(max_steps))


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")


def drop_held_out(sequences: pd.DataFrame, held: set[str]) -> pd.DataFrame:
    """Rows whose target is not held out, with held-out items removed from their histories;
    rows left with an empty history are dropped."""
    rows = sequences[~sequences["target"].astype(str).isin(held)].copy()
    rows["history"] = [[h for h in hist if str(h) not in held] for hist in rows["history"]]
    rows = rows[[len(h) > 0 for h in rows["history"]]]
    return rows.reset_index(drop=True)


def prepare(args) -> None:
    from singer_rec.datasets.raw_files import RawFilesDataset
    from singer_rec.pipelines.embed.nodes import embed_items
    from singer_rec.pipelines.ingest.nodes import ingest
    from singer_rec.pipelines.prompts.nodes import build_sft_train, build_sft_valid
    from singer_rec.pipelines.sid.nodes import build_semantic_ids
    from singer_rec.pipelines.split.nodes import split_sequences

    out: Path = args.out
    params = parameters(args.max_steps)
    seed = int(params["seed"])
    started = time.time()
    raw = RawFilesDataset(source="minionerec", root=str(args.raw_root), dataset="Industrial_and_Scientific").load()
    items, interactions, given = ingest(raw, seed, params["ingest"])
    train, valid, test, _ = split_sequences(items, interactions, given, params["split"])
    embeddings = embed_items(items, params["embed"])
    rng = np.random.default_rng(seed)
    ids = items["item_id"].astype(str).to_numpy()
    held = set(rng.choice(ids, size=int(round(HOLDOUT_SHARE * len(ids))), replace=False).tolist())
    keep = ~items["item_id"].astype(str).isin(held).to_numpy()
    shared = out / "shared"
    shared.mkdir(parents=True, exist_ok=True)
    for name, frame in (("items", items), ("train_sequences", train), ("valid_sequences", valid),
                        ("test_sequences", test)):
        frame.to_parquet(shared / f"{name}.parquet", index=False)
    np.save(shared / "item_embeddings.npy", embeddings)
    new_items = items[~keep].reset_index(drop=True)
    new_items.to_parquet(shared / "new_items.parquet", index=False)
    variants = {
        "full": (items.reset_index(drop=True), embeddings, train, valid),
        "cold": (items[keep].reset_index(drop=True), embeddings[keep], drop_held_out(train, held),
                 drop_held_out(valid, held)),
    }
    summary = {"n_items": len(items), "n_held_out": len(held), "seed": seed, "recipe": recipe(args.max_steps),
               "test_rows": len(test), "test_rows_held_out_target": int(test["target"].astype(str).isin(held).sum())}
    for variant, (v_items, v_emb, v_train, v_valid) in variants.items():
        folder = out / variant
        folder.mkdir(parents=True, exist_ok=True)
        item_sids, codebooks, sid_report = build_semantic_ids(v_items, v_emb, params["sid"], seed)
        sft_train = build_sft_train(v_items, item_sids, v_train, params["prompts"], seed)
        sft_valid = build_sft_valid(v_items, item_sids, v_valid, params["prompts"], seed)
        v_items.to_parquet(folder / "items.parquet", index=False)
        item_sids.to_parquet(folder / "item_sids.parquet", index=False)
        np.save(folder / "sid_codebooks.npy", codebooks)
        np.save(folder / "item_embeddings.npy", v_emb)
        sft_train.to_parquet(folder / "sft_dataset_train.parquet", index=False)
        sft_valid.to_parquet(folder / "sft_dataset_valid.parquet", index=False)
        write_json(folder / "sid_report.json", sid_report)
        summary[variant] = {"items": len(v_items), "train_sequences": len(v_train), "valid_sequences": len(v_valid),
                            "sft_train_rows": len(sft_train), "sft_valid_rows": len(sft_valid)}
    summary["prepare_wall_s"] = round(time.time() - started, 1)
    write_json(out / "prepare.json", summary)
    logger.info("prepared: %s", summary)


def train(args) -> None:
    from singer_rec.pipelines.sft.nodes import train_sft_model

    out: Path = args.out
    folder = out / args.variant
    params = parameters(args.max_steps)
    sft_params = {**params["sft"], "work_dir": str(folder / "sft_work"), "keep_finished_runs": 1}
    started = time.time()
    model_folder, report = train_sft_model(
        pd.read_parquet(folder / "sft_dataset_train.parquet"), pd.read_parquet(folder / "sft_dataset_valid.parquet"),
        pd.read_parquet(folder / "items.parquet"), pd.read_parquet(folder / "item_sids.parquet"),
        sft_params, params["prompts"], int(params["seed"]))
    wall = round(time.time() - started, 1)
    write_json(folder / "train.json", {"model_folder": str(model_folder), "report": report, "wall_s": wall})
    logger.info("%s: SFT done in %.0f s -> %s", args.variant, wall, model_folder)


def popularity_ranking(train: pd.DataFrame, k: int) -> list[str]:
    """The ``k`` most frequent train targets (ties: item id order)."""
    counts = train["target"].astype(str).value_counts()
    frame = counts.rename_axis("item").reset_index(name="n").sort_values(["n", "item"], ascending=[False, True])
    return frame["item"].head(k).tolist()


def _metrics(ranked: list[list[str]], targets: list[str]) -> dict:
    from singer_rec.metrics import ranking_metrics

    return {k: round(float(v), 4) for k, v in ranking_metrics(ranked, targets, KS).items()}


def finish(args) -> None:
    from singer_rec.pipelines.catalog_update import nodes as cu
    from singer_rec.pipelines.evaluate.nodes import predict_next_items

    out: Path = args.out
    params = parameters(args.max_steps)
    started = time.time()
    shared = out / "shared"
    test = pd.read_parquet(shared / "test_sequences.parquet")
    new_items = pd.read_parquet(shared / "new_items.parquet")
    held = set(new_items["item_id"].astype(str))
    cold_model = Path(json.loads((out / "cold" / "train.json").read_text())["model_folder"])
    full_model = Path(json.loads((out / "full" / "train.json").read_text())["model_folder"])

    # (a): the held-out items through catalog_update's nodes, into a new model folder
    t0 = time.time()
    cold = out / "cold"
    checked = cu.check_new_items(new_items, pd.read_parquet(cold / "items.parquet"), params["catalog_update"])
    new_embeddings = cu.embed_new_items(checked, params["embed"])
    items_all, sids_all, report = cu.assign_new_items(
        checked, new_embeddings, pd.read_parquet(cold / "items.parquet"), pd.read_parquet(cold / "item_sids.parquet"),
        np.load(cold / "sid_codebooks.npy"))
    updated_model = cu.update_model_folder(cold_model, checked, sids_all, out / "cold" / "updated_model")
    update_s = round(time.time() - t0, 1)
    write_json(out / "cold" / "catalog_update_report.json", report)

    held_rows = test[test["target"].astype(str).isin(held)].reset_index(drop=True)
    overall = test.head(args.overall_rows).reset_index(drop=True) if args.overall_rows else test
    results = {"held_out_test_rows": len(held_rows), "overall_test_rows": len(overall), "update_s": update_s,
               "catalog_update": report}

    def evaluate(model: Path, rows: pd.DataFrame, name: str) -> dict:
        t = time.time()
        predictions = predict_next_items(model, rows, params["evaluate"], name)
        metrics = _metrics(predictions["ranked_items"].tolist(), predictions["target"].tolist())
        metrics["decode_s"] = round(time.time() - t, 1)
        return metrics

    results["held_out"] = {"updated": evaluate(updated_model, held_rows, "held-out (updated)"),
                           "full": evaluate(full_model, held_rows, "held-out (full)")}
    popular = popularity_ranking(pd.read_parquet(shared / "train_sequences.parquet"), max(KS))
    results["held_out"]["popularity"] = _metrics([popular] * len(held_rows), held_rows["target"].astype(str).tolist())
    results["overall"] = {"updated": evaluate(updated_model, overall, "overall (updated)"),
                          "full": evaluate(full_model, overall, "overall (full)"),
                          "popularity": _metrics([popular] * len(overall), overall["target"].astype(str).tolist())}
    for variant in ("cold", "full"):
        results[f"train_{variant}"] = json.loads((out / variant / "train.json").read_text())
    results["prepare"] = json.loads((out / "prepare.json").read_text())
    results["finish_wall_s"] = round(time.time() - started, 1)
    write_json(out / "results.json", results)
    (out / "table.md").write_text(table(results), encoding="utf-8")
    print(table(results))


def diagnose(args) -> None:
    """Held-out target rows only, deeper than the table: HR@20/HR@50 (beam 50) and how often the top 10
    holds an item that shares the target's first SID code, for the updated and the full model."""
    from singer_rec.metrics import ranking_metrics
    from singer_rec.modeling import read_meta
    from singer_rec.pipelines.evaluate.nodes import predict_next_items
    from singer_rec.sid.tokens import sid_tokens

    out: Path = args.out
    params = parameters(args.max_steps)
    test = pd.read_parquet(out / "shared" / "test_sequences.parquet")
    held = set(pd.read_parquet(out / "shared" / "new_items.parquet")["item_id"].astype(str))
    rows = test[test["target"].astype(str).isin(held)].reset_index(drop=True)
    models = {"updated": out / "cold" / "updated_model",
              "full": Path(json.loads((out / "full" / "train.json").read_text())["model_folder"])}
    result = {}
    for name, folder in models.items():
        sid_map = read_meta(folder)["sid_map"]
        predictions = predict_next_items(folder, rows, {**params["evaluate"], "num_beams": 50, "ks": [10, 20, 50]},
                                         f"held-out ({name}, beam 50)")
        ranked, targets = predictions["ranked_items"].tolist(), predictions["target"].tolist()
        metrics = {k: round(float(v), 4) for k, v in ranking_metrics(ranked, targets, [10, 20, 50]).items()}
        first = [any(sid_tokens(sid_map[i])[0] == sid_tokens(sid_map[t])[0] for i in r[:10]) for r, t in zip(ranked, targets)]
        metrics["top10_shares_first_code"] = round(float(np.mean(first)), 4)
        metrics["top10_new_items_share"] = round(float(np.mean([np.mean([i in held for i in r[:10]]) for r in ranked])), 4)
        result[name] = metrics
    write_json(out / "diagnose.json", result)
    print(json.dumps(result, indent=1))


def table(results: dict) -> str:
    h, o = results["held_out"], results["overall"]
    lines = ["| model | held-out targets HR@10 | NDCG@10 | overall HR@10 | NDCG@10 |", "|---|---|---|---|---|"]
    names = {"updated": "(a) trained without them + catalog_update", "full": "(b) trained with all items",
             "popularity": "(c) popularity (all train targets)"}
    for key, name in names.items():
        lines.append(f"| {name} | {h[key]['HR@10']:.4f} | {h[key]['NDCG@10']:.4f} | "
                     f"{o[key]['HR@10']:.4f} | {o[key]['NDCG@10']:.4f} |")
    lines.append("")
    lines.append(f"held-out target rows: {results['held_out_test_rows']}; overall rows: {results['overall_test_rows']}; "
                 f"catalog_update {results['update_s']} s")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["prepare", "train", "finish", "diagnose"])
    parser.add_argument("--variant", choices=["cold", "full"], help="train: which model")
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "cold_start")
    parser.add_argument("--raw-root", type=Path, default=DEFAULT_RAW)
    parser.add_argument("--max-steps", type=int, default=300, help="SFT optimiser steps of 128 rows")
    parser.add_argument("--overall-rows", type=int, default=1000, help="overall test rows ranked (0: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    os.chdir(ROOT)
    if args.step == "train" and not args.variant:
        parser.error("train needs --variant cold|full")
    {"prepare": prepare, "train": train, "finish": finish, "diagnose": diagnose}[args.step](args)


if __name__ == "__main__":
    sys.exit(main())
