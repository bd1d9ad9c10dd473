"""Where one RL optimiser step spends its time, on Industrial-shaped data.

The world: the real Industrial_and_Scientific items (titles, descriptions) and MiniOneRec SIDs
(3 levels x 256 codes; items whose shipped SID collides with an earlier item's are left out, so
every SID is one item), the real test sequences standing in for the train sequences, and the
rl_dataset that the prompts stage builds from them with the industrial templates (all six tasks,
so about a third of the prompts have title answers). The model is the Industrial SFT preset
(``INDUSTRIAL_SCRATCH`` below: scratch Qwen2, hidden 256, 4 layers, a tokenizer of 8,000 + the SID
tokens) with random weights: speed does not depend on the weights, though the
share of hard (guided) prompts does (random weights: almost every prompt is hard, the worst case).

The step is the real trainer (``singer_rec.training.rl.train_grpo``) with the Industrial CPU
recipe's settings (``CPU_RECIPE`` below: 32 prompts, k = 16, micro-batches of 128); its
per-phase timer (``time_<phase>`` in the history) gives the breakdown. The first step is a
warm-up and is left out of the medians. MLflow logging goes to a real sqlite store in a temp dir.

    python benchmarks/rl/bench_rl_step.py --steps 6 --threads 2
    python benchmarks/rl/bench_rl_step.py --steps 6 --threads 2 --set autocast=off   # a settings override
"""
from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

from singer_rec import modeling
from singer_rec.prompts import PromptBuilder
from singer_rec.training import rl as rlt
from singer_rec.training.sft import tokenizer_corpus

REPO = Path(__file__).resolve().parents[2]
MINIONEREC = REPO.parent / "shared" / "data" / "amazon18" / "minionerec"
CATEGORY = "Industrial_and_Scientific"
# the Industrial SFT preset's model and the Industrial CPU recipe's RL settings (kept here so the
# benchmark does not depend on an environment's files)
INDUSTRIAL_SCRATCH = {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
                      "intermediate_size": 704, "max_position_embeddings": 512, "tokenizer_vocab_size": 8000}
CPU_RECIPE = {"num_generations": 16, "reward": "full", "sampling": "beam+prefix", "alignment": "full",
              "sid_reward_decay": 0.5, "beta": 0.1, "epsilon": 0.2, "learning_rate": 5e-5, "batch_size": 32,
              "micro_batch_size": 128, "rollout_batch_size": 32, "num_iterations": 1}


def load_world():
    """(items, item_sids, sequences) tables from the paper's processed Industrial data."""
    index = json.loads((MINIONEREC / "index" / f"{CATEGORY}.index.json").read_text())
    meta = json.loads((MINIONEREC / "index" / f"{CATEGORY}.item.json").read_text())
    owner: dict[str, str] = {}
    for item, tokens in index.items():  # one item per SID: drop the later items of a colliding SID
        owner.setdefault("".join(tokens), item)
    kept = sorted(owner.values(), key=int)
    items = pd.DataFrame({"item_id": kept, "title": [meta[i].get("title", "") for i in kept],
                          "description": [meta[i].get("description", "") for i in kept]})
    item_sids = pd.DataFrame({"item_id": kept, "sid": ["".join(index[i]) for i in kept]})
    test = pd.read_csv(MINIONEREC / "test" / f"{CATEGORY}_5_2016-10-2018-11.csv")
    keep = set(kept)
    histories = [[str(h) for h in ast.literal_eval(v) if str(h) in keep] for v in test["history_item_id"]]
    sequences = pd.DataFrame({"user_id": test["user_id"].astype(str), "history": histories,
                              "target": test["item_id"].astype(str)})
    sequences = sequences[sequences["target"].isin(keep) & (sequences["history"].map(len) > 0)]
    return items, item_sids, sequences.reset_index(drop=True)


def build(seed: int = 0):
    """(policy, tokenizer, meta, rl_dataset frame) of the Industrial-shaped world."""
    # the base prompts block: all six tasks in RL, the paper's templates
    prompts_cfg = yaml.safe_load((REPO / "conf" / "base" / "parameters_prompts.yml").read_text())["prompts"]
    items, item_sids, sequences = load_world()
    builder = PromptBuilder(items, item_sids, prompts_cfg["templates"], prompts_cfg["history_length"],
                            prompts_cfg["description_max_chars"], seed=seed)
    frame = builder.build(prompts_cfg["rl_tasks"], sequences, "train_sequences")
    model_cfg = {"preset": "scratch", "scratch": INDUSTRIAL_SCRATCH}
    corpus = tokenizer_corpus(items, prompts_cfg["templates"])
    sid_map = dict(zip(item_sids["item_id"], item_sids["sid"]))
    model, tokenizer = modeling.build_model(model_cfg, corpus, modeling.sid_vocabulary_for(sid_map.values()), seed=seed)
    meta = {"preset": "scratch", "sid_map": sid_map, "titles": dict(builder.title_of)}  # cleaned, as the prompts hold them
    return model.eval(), tokenizer, meta, frame


def settings_for(steps: int, overrides: dict, seed: int) -> rlt.RLSettings:
    values = dict(CPU_RECIPE)
    values.update({"max_steps": steps, "probe_prompts": 0, "checkpoint_every": 0, "epochs": 1000, "seed": seed})
    values.update(overrides)
    return rlt.RLSettings.from_dict(values)


def parse_overrides(pairs: list[str]) -> dict:
    return {k: yaml.safe_load(v) for k, v in (p.split("=", 1) for p in pairs)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6, help="optimiser steps (the first is a warm-up)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", nargs="*", default=[], help="rl settings overrides, key=value")
    parser.add_argument("--json", help="write the per-step history here")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="phase clock: wall seconds, or this process's CPU seconds (steadier on a shared machine)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.clock == "cpu":
        rlt.PhaseTimer.clock = staticmethod(time.process_time)
    if not MINIONEREC.is_dir():
        sys.exit(f"{MINIONEREC} not found: the benchmark uses the real Industrial items and SIDs")
    started = time.perf_counter()
    policy, tokenizer, meta, frame = build(args.seed)
    policy.to(args.device)
    settings = rlt.validate_settings(settings_for(args.steps, parse_overrides(args.set), args.seed), len(meta["sid_map"]))
    sid_dict, title_dict, _ = rlt.build_dictionaries(tokenizer, meta, policy.config.vocab_size, True)
    examples = rlt.build_examples(frame, tokenizer, sid_dict, title_dict, settings)
    reference = copy.deepcopy(policy)
    n_title = sum(not e.is_sid for e in examples)
    print(f"# world: {len(sid_dict.sequences)} items, {len(title_dict.sequences)} titles, {len(examples)} prompts "
          f"({n_title / len(examples):.0%} title answers), vocab {len(tokenizer)}, "
          f"{sum(p.numel() for p in policy.parameters()) / 1e6:.1f}M params, built in {time.perf_counter() - started:.0f} s")
    print(f"# settings: batch {settings.batch_size}, k {settings.num_generations}, micro {settings.micro_batch_size}, "
          f"overrides {parse_overrides(args.set)}, torch threads {args.threads}, load average {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        from singer_rec import tracking

        os.environ[tracking.URI_ENV] = f"sqlite:///{tmp}/mlflow.db"
        import mlflow

        mlflow.set_tracking_uri(os.environ[tracking.URI_ENV])
        os.environ[tracking.RUN_ID_ENV] = mlflow.MlflowClient().create_run(
            mlflow.MlflowClient().create_experiment("bench")).info.run_id
        result = rlt.train_grpo(policy, reference, tokenizer, examples, sid_dict, title_dict, settings, progress=False)
        os.environ.pop(tracking.RUN_ID_ENV)
    history = result["history"]
    if args.json:
        Path(args.json).write_text(json.dumps(history, indent=1))
    measured = history[1:] if len(history) > 1 else history
    phases = sorted({k for h in measured for k in h if k.startswith("time_")})
    # wall: the trainer's own step time; cpu: the sum of the phases (the step is nothing else)
    total = statistics.median(h["seconds_per_step"] if args.clock == "wall" else
                              sum(v for k, v in h.items() if k.startswith("time_")) for h in measured)
    print(f"# {len(measured)} measured steps (guide lengths {[round(h['guide_length'], 2) for h in history]}, "
          f"hard fraction {[round(h['hard_fraction'], 2) for h in history]})")
    print("| phase | median s | share of step |")
    print("|---|---|---|")
    for name in phases:
        value = statistics.median(h.get(name, 0.0) for h in measured)
        print(f"| {name[5:]} | {value:.3f} | {value / total:.0%} |")
    print(f"| **step ({args.clock} clock)** | **{total:.3f}** | 100% |")
    print(f"# per step: {[round(h['seconds_per_step'], 2) for h in history]}; load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
