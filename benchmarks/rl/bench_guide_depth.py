"""The paper's guide schedule vs ``guide_depth: items`` in a controlled sparse-SID world.

64 items with 3-level SIDs drawn from 8 x 8 x 8 codes (as in real catalogues, a 2-token prefix
mostly holds the target alone, a 1-token prefix about 8 items), 16 users with a one-item history
and a fixed next item, semantic prompts only; an untrained 2-layer Qwen2 trained by the real
trainer with k = 4, reward ``full``, ``beam+prefix``. T = ``--steps``: the first third of the steps
guide with 2 tokens, the second with 1. The score is the probe hit rate (unguided beam rollouts of
all 16 prompts) after RL, per seed, for each ``guide_depth``.

    python benchmarks/rl/bench_guide_depth.py --seeds 0 1 2 3 4 --steps 60
"""
from __future__ import annotations

import argparse
import itertools
import os
import random
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from small_world import tiny_policy, train_and_probe  # noqa: E402

from singer_rec.sid.tokens import format_sid  # noqa: E402
from singer_rec.prompts import render_for_model  # noqa: E402

USERS = 16


def world(seed: int):
    """(policy, tokenizer, meta, rl rows) of the sparse-SID world."""
    rng = random.Random(seed)
    codes = rng.sample(list(itertools.product(range(8), range(8), range(8))), 64)
    items = {f"i{j:02d}": format_sid(c) for j, c in enumerate(sorted(codes))}
    picked = rng.sample(sorted(items), 2 * USERS)
    history, target = picked[:USERS], picked[USERS:]
    policy, tokenizer = tiny_policy(["Recommend after"] * 5 + [render_for_model("x")], items.values(), seed)
    rows = pd.DataFrame({"task": "semantic", "prompt": [f"Recommend after {items[h]}" for h in history],
                         "answer": [items[t] for t in target]})
    return policy, tokenizer, {"sid_map": items, "titles": {}}, rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    variants = {"schedule": {"guide_depth": "schedule"}, "items (>= 2)": {"guide_depth": "items", "guide_min_items": 2}}
    scores = {name: [] for name in variants}
    for seed in args.seeds:
        for name, extra in variants.items():
            result = train_and_probe(*world(seed), "sft", max_steps=args.steps, learning_rate=args.lr, seed=seed, **extra)
            history = result["history"]
            scores[name].append((result["probe"]["before"]["hit_rate"], result["probe"]["after"]["hit_rate"],
                                 statistics.mean(h["guide_length"] for h in history[: len(history) // 3])))
    print(f"# {USERS} prompts, 64 items of 8x8x8 codes, k = 4, {args.steps} steps, lr {args.lr}, seeds {args.seeds}; "
          f"{time.perf_counter() - started:.0f} s, load average {os.getloadavg()}")
    print("| guide_depth | mean guide, first third | hit rate before | after, per seed | after, mean |")
    print("|---|---|---|---|---|")
    for name, runs in scores.items():
        after = [a for _, a, _ in runs]
        print(f"| {name} | {statistics.mean(g for *_, g in runs):.2f} | {statistics.mean(b for b, _, _ in runs):.3f} | "
              f"{', '.join(f'{a:.3f}' for a in after)} | {statistics.mean(after):.3f} |")


if __name__ == "__main__":
    main()
