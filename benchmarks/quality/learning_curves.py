"""Learning curves (valid HR@10 / NDCG@10 against training seconds) for TIGER-style and SFT, same data.

Reads the stage outputs of one dataset from a folder of parquet files (what `kedro run` wrote:
items, item_sids, train/valid/test_sequences, sft_dataset_train, sft_dataset_valid), trains one
variant in this process and writes a json with its curve and its test metrics. `--plot` draws
several result files on one figure.

    python benchmarks/quality/learning_curves.py --data DIR --variant tiger --out tiger.json
    python benchmarks/quality/learning_curves.py --data DIR --variant sft --tasks semantic \\
        --sft '{"max_steps": 4000, "epochs": 30, "patience": 30}' --out sft_semantic.json
    python benchmarks/quality/learning_curves.py --plot a.json b.json --out curves.png [--x steps]

SFT variants take the demo's `sft` parameters from conf/base (or `--conf-env`), overridden by the
`--sft` / `--model` json. Model selection is on valid only; test is scored once, at the end, on the
selected model.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]


def _load(folder: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(folder / f"{name}.parquet")


def run_tiger(data: Path, overrides: dict, valid_rows: int | None) -> dict:
    """TIGER-style training (the baseline's own loop), ranked on valid after every epoch."""
    import copy

    import torch

    from singer_rec.baselines import tiger

    cfg = tiger.TigerConfig(**overrides)
    vocab = tiger.SidVocabulary(_load(data, "item_sids"))
    train, valid, test = (_load(data, f"{s}_sequences") for s in ("train", "valid", "test"))
    valid_rank = valid if valid_rows is None else valid.head(valid_rows)
    prompts, answers = vocab.encode(train, cfg.max_history, "train_sequences")
    longest = max(len(p) + len(a) for p, a in zip(prompts, answers)) + 64
    model = tiger.build_tiger_model(vocab, cfg, max_positions=longest)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(cfg.seed)
    curve, train_seconds, best, best_state, stale = [], 0.0, -1.0, None, 0
    for epoch in range(1, cfg.max_epochs + 1):
        t0 = time.process_time()
        model.train()
        order = torch.randperm(len(prompts), generator=generator).tolist()
        for start in range(0, len(order), cfg.batch_size):
            rows = order[start:start + cfg.batch_size]
            loss = tiger._answer_loss(model, [prompts[i] for i in rows], [answers[i] for i in rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        train_seconds += time.process_time() - t0
        model.eval()
        metrics = tiger.evaluate_tiger(model, vocab, valid_rank, cfg)
        curve.append({"epoch": epoch, "train_cpu_seconds": round(train_seconds, 2), **metrics})
        print(f"tiger epoch {epoch}: {train_seconds:.0f} s, valid HR@10 {metrics['HR@10']:.4f} NDCG@10 {metrics['NDCG@10']:.4f}",
              flush=True)
        if metrics["NDCG@10"] > best:
            best, best_state, stale = metrics["NDCG@10"], copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    return {"curve": curve, "test": tiger.evaluate_tiger(model, vocab, test, cfg), "train_cpu_seconds": train_seconds}


def run_sft(data: Path, tasks: list[str] | None, sft_overrides: dict, model_overrides: dict, conf_env: str,
            test_rows: int | None) -> dict:
    """SFT through the training entry point (in this process), then test through the evaluate stage's code."""
    from singer_rec.metrics import ranking_metrics
    from singer_rec.pipelines.evaluate.nodes import predict_next_items
    from singer_rec.settings import project_parameters
    from singer_rec.training import sft

    params = project_parameters(ROOT / "conf", conf_env)
    train_df = _load(data, "sft_dataset_train")
    if tasks:
        train_df = train_df[train_df["task"].isin(tasks)].reset_index(drop=True)
    work = Path(tempfile.mkdtemp(prefix="curves-"))
    inputs = {"train_path": work / "train.parquet", "valid_path": data / "sft_dataset_valid.parquet",
              "items_path": data / "items.parquet", "item_sids_path": data / "item_sids.parquet"}
    train_df.to_parquet(inputs["train_path"], index=False)
    model = params["sft"]["model"]
    model["scratch"] = {**model.get("scratch", {}), **model_overrides}
    cfg = {**params["sft"]["train"], **sft_overrides, "seed": params.get("seed", 42), "model": model,
           "templates": params["prompts"]["templates"],
           **{k: str(v) for k, v in inputs.items()},
           "output_dir": str(work / "model"), "checkpoint_dir": str(work / "ckpt"), "result_path": str(work / "result.json")}
    cpu0, wall0 = time.process_time(), time.time()
    result = sft.train(cfg)
    train_cpu, train_wall = time.process_time() - cpu0, time.time() - wall0
    predictions = predict_next_items(Path(result["model_dir"]), _load(data, "test_sequences"),
                                     {**params["evaluate"], "device": "cpu"}, "test_sequences", test_rows)
    test = ranking_metrics(predictions["ranked_items"].tolist(), predictions["target"].tolist())
    return {"curve": result["valid_curve"], "test": test, "best_step": result["best_step"], "steps": result["steps"],
            "train_cpu_seconds": train_cpu, "train_wall_seconds": train_wall, "train_rows": len(train_df),
            "sft_overrides": sft_overrides, "model_overrides": model_overrides, "tasks": tasks}


X_AXES = {"cpu": "training CPU seconds (one thread)", "steps": "SFT optimizer steps (128 rows each)"}


def plot(paths: list[str], out: str, x: str = "cpu", labels: list[str] | None = None) -> None:
    """Valid HR@10 / NDCG@10 of each result file against ``x`` (``cpu`` seconds or optimizer ``steps``).

    A file holds ``curve`` and ``test`` (this script's results) or ``sft_valid_curve`` and ``sft_test``
    (the recipe result files of the real datasets). ``labels`` replace the files' own, in order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for index, path in enumerate(paths):
        result = json.loads(Path(path).read_text())
        curve, test = result.get("curve") or result["sft_valid_curve"], result.get("test") or result["sft_test"]
        xs = [p["step"] if x == "steps" else p.get("train_cpu_seconds", p.get("train_seconds")) for p in curve]
        name = labels[index] if labels else result.get("label", Path(path).stem)
        label = f"{name} (test HR@10 {test['HR@10']:.3f}, NDCG@10 {test['NDCG@10']:.3f})"
        for axis, metric in zip(axes, ("HR@10", "NDCG@10")):
            axis.plot(xs, [p[metric] for p in curve], marker=".", label=label)
            axis.set_xlabel(X_AXES[x])
            axis.set_ylabel(f"valid {metric}")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--variant", choices=["tiger", "sft"])
    parser.add_argument("--tasks", nargs="*", help="SFT tasks kept from sft_dataset_train (default: all)")
    parser.add_argument("--sft", default="{}", help="json overrides of sft.train")
    parser.add_argument("--model", default="{}", help="json overrides of sft.model.scratch")
    parser.add_argument("--tiger", default="{}", help="json overrides of TigerConfig")
    parser.add_argument("--conf-env", default="base")
    parser.add_argument("--valid-rows", type=int, default=None)
    parser.add_argument("--test-rows", type=int, default=None)
    parser.add_argument("--label", default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--plot", nargs="*")
    parser.add_argument("--x", choices=sorted(X_AXES), default="cpu", help="x axis of --plot")
    parser.add_argument("--labels", nargs="*", help="legend labels of --plot's files, in order")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.plot:
        if args.labels and len(args.labels) != len(args.plot):
            parser.error(f"--labels: {len(args.labels)} labels for {len(args.plot)} files")
        plot(args.plot, args.out, args.x, args.labels)
        return
    import torch

    torch.set_num_threads(args.threads)
    started = time.time()
    if args.variant == "tiger":
        result = run_tiger(args.data, json.loads(args.tiger), args.valid_rows)
    else:
        result = run_sft(args.data, args.tasks, json.loads(args.sft), json.loads(args.model), args.conf_env, args.test_rows)
    result.update({"label": args.label or args.variant, "wall_seconds": time.time() - started,
                   "load_average": os.getloadavg()})
    Path(args.out).write_text(json.dumps(result, indent=1, default=lambda v: None if isinstance(v, float) and math.isnan(v) else str(v)))
    print(json.dumps({"label": result["label"], "test": result["test"], "wall_seconds": round(result["wall_seconds"])}))


if __name__ == "__main__":
    main()
