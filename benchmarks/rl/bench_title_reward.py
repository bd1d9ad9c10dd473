"""Does a target-aware reward for hard title samples help RL learn titles? A controlled small world.

64 items with 3-level SIDs (4 x 4 x 4) and titles whose words follow the same levels
("red steel cup": colour, material, object), so a title's leading words say how close it is to
the target as a SID prefix does. 16 users, each with a one-item history and a fixed next item;
the RL prompts ask for the *title* of the next item ("Title after <history SID>"), i.e. every
prompt is a title-answer task. An untrained 2-layer Qwen2 (the RL test world's size) is trained
by the real trainer with k = 4 beams for ``--steps`` steps under each ``title_reward``; the score
is the probe hit rate (unguided beam rollouts of all 16 prompts) after RL, per seed.

    python benchmarks/rl/bench_title_reward.py --seeds 0 1 2 --steps 30
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
from singer_rec.rl.rewards import TITLE_REWARDS  # noqa: E402

WORDS = (["red", "blue", "green", "black"], ["steel", "wood", "glass", "paper"], ["cup", "box", "pen", "lamp"])
USERS = 16


def world(seed: int):
    """(policy, tokenizer, meta, rl rows) of the hierarchical-title world."""
    codes = list(itertools.product(range(4), range(4), range(4)))
    items = {f"i{j:02d}": format_sid(c) for j, c in enumerate(codes)}
    titles = {f"i{j:02d}": " ".join(WORDS[level][c[level]] for level in range(3)) for j, c in enumerate(codes)}
    rng = random.Random(seed)
    picked = rng.sample(sorted(items), 2 * USERS)
    history, target = picked[:USERS], picked[USERS:]
    corpus = list(titles.values()) * 3 + ["Title after"] * 5 + [render_for_model("x")]
    policy, tokenizer = tiny_policy(corpus, items.values(), seed)
    meta = {"sid_map": items, "titles": titles}
    rows = pd.DataFrame({"task": "sid_history_to_title", "prompt": [f"Title after {items[h]}" for h in history],
                         "answer": [titles[t] for t in target]})
    return policy, tokenizer, meta, rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    scores: dict[str, list[tuple[float, float]]] = {kind: [] for kind in TITLE_REWARDS}
    for seed in args.seeds:
        for kind in TITLE_REWARDS:
            result = train_and_probe(*world(seed), "full", max_steps=args.steps, learning_rate=args.lr,
                                     title_reward=kind, seed=seed)
            scores[kind].append((result["probe"]["before"]["hit_rate"], result["probe"]["after"]["hit_rate"]))
    print(f"# {USERS} title prompts, 64 titles, k = 4, {args.steps} steps, lr {args.lr}, seeds {args.seeds}; "
          f"{time.perf_counter() - started:.0f} s, load average {os.getloadavg()}")
    print("| title_reward | probe hit rate before | after, per seed | after, mean |")
    print("|---|---|---|---|")
    for kind, runs in scores.items():
        after = [a for _, a in runs]
        print(f"| {kind} | {statistics.mean(b for b, _ in runs):.3f} | {', '.join(f'{a:.3f}' for a in after)} | "
              f"{statistics.mean(after):.3f} |")


if __name__ == "__main__":
    main()
