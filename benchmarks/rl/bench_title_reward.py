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
from singer_rec.rl.rewards import TITLE_REWARDS
from singer_rec.training import rl as rlt

WORDS = (["red", "blue", "green", "black"], ["steel", "wood", "glass", "paper"], ["cup", "box", "pen", "lamp"])
USERS = 16


def world(seed: int):
    """(policy, tokenizer, meta, rl rows) of the hierarchical-title world."""
    codes = list(itertools.product(range(4), range(4), range(4)))
    items = {f"i{j:02d}": sid_format.format_sid(c) for j, c in enumerate(codes)}
    titles = {f"i{j:02d}": " ".join(WORDS[level][c[level]] for level in range(3)) for j, c in enumerate(codes)}
    rng = random.Random(seed)
    picked = rng.sample(sorted(items), 2 * USERS)
    history, target = picked[:USERS], picked[USERS:]
    corpus = list(titles.values()) * 3 + ["Title after"] * 5 + [render_for_model("x")]
    tokenizer = train_scratch_tokenizer(corpus, 300)
    add_sid_tokens(tokenizer, sid_vocabulary_for(items.values()))
    torch.manual_seed(seed)
    policy = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)).eval()
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
            policy, tokenizer, meta, rows = world(seed)
            settings = rlt.validate_settings(rlt.RLSettings(
                alignment="full", group_size=4, batch_size=8, micro_batch_size=32, probe_prompts=USERS, epochs=1000,
                max_steps=args.steps, learning_rate=args.lr, title_reward=kind, seed=seed), 64)
            sid_dict, title_dict, _ = rlt.build_dictionaries(tokenizer, meta, len(tokenizer), True)
            examples = rlt.build_examples(rows, tokenizer, sid_dict, title_dict, settings)
            result = rlt.train_grpo(policy, copy.deepcopy(policy), tokenizer, examples, sid_dict, title_dict, settings,
                                    progress=False)
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
