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
import copy
import itertools
import os
import random
import statistics
import time

import pandas as pd
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from singer_rec import sid_format
from singer_rec.modeling import add_sid_tokens, sid_vocabulary_for, train_scratch_tokenizer
from singer_rec.prompts import render_for_model
from singer_rec.training import rl as rlt

USERS = 16


def world(seed: int):
    """(policy, tokenizer, meta, rl rows) of the sparse-SID world."""
    rng = random.Random(seed)
    codes = rng.sample(list(itertools.product(range(8), range(8), range(8))), 64)
    items = {f"i{j:02d}": sid_format.format_sid(c) for j, c in enumerate(sorted(codes))}
    picked = rng.sample(sorted(items), 2 * USERS)
    history, target = picked[:USERS], picked[USERS:]
    tokenizer = train_scratch_tokenizer(["Recommend after"] * 5 + [render_for_model("x")], 300)
    add_sid_tokens(tokenizer, sid_vocabulary_for(items.values()))
    torch.manual_seed(seed)
    policy = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)).eval()
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
            policy, tokenizer, meta, rows = world(seed)
            settings = rlt.validate_settings(rlt.RLSettings(
                alignment="sft", group_size=4, batch_size=8, micro_batch_size=32, probe_prompts=USERS, epochs=1000,
                max_steps=args.steps, learning_rate=args.lr, seed=seed, **extra), 64)
            sid_dict, _, _ = rlt.build_dictionaries(tokenizer, meta, len(tokenizer), False)
            examples = rlt.build_examples(rows, tokenizer, sid_dict, None, settings)
            result = rlt.train_grpo(policy, copy.deepcopy(policy), tokenizer, examples, sid_dict, None, settings,
                                    progress=False)
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
