"""How much learning signal the hard samples' groups carry, on Industrial-shaped SIDs and titles.

A group whose rewards are all equal (or a group of one) has zero advantage: it costs a rollout and
a forward/backward and teaches nothing. This counts, with the real rollout code
(``singer_rec.training.rl.rollout``) on the Industrial-shaped world of ``bench_rl_step.py``
(3,670 items, 3 levels x 256 codes, random weights: nearly every prompt is hard):

* SID prompts, at each stage of the curriculum (guide 2, 1, 0 tokens: steps 1, 2, 3 of T = 3),
  for ``guide_depth: schedule`` (the paper) and ``guide_depth: items`` (back off to a prefix with
  at least ``guide_min_items`` items): mean group size, share of one-item groups, share of guided
  groups with a non-zero advantage. Under a guide whose prefix holds at most k items the group is
  every item under it whatever the weights, so those stages do not depend on the random model.
* Title prompts (no guide): share of hard groups with a non-zero advantage under each
  ``title_reward``, and the share whose best-rewarded candidate shares more leading tokens with
  the target than the beam's top candidate (does the reward point towards the target?).

    python benchmarks/rl/bench_guided_groups.py --prompts 64 --threads 1
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_rl_step import MINIONEREC, build  # noqa: E402

from singer_rec.rl.grpo import group_advantages  # noqa: E402
from singer_rec.rl.rewards import TITLE_REWARDS, group_rewards, match_depth  # noqa: E402
from singer_rec.training import rl as rlt  # noqa: E402


def nonzero(rewards) -> bool:
    return bool((group_advantages(rewards).abs() > 0).any())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=64, help="SID prompts and title prompts, each")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--min-items", type=int, nargs="+", default=[2, 4])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not MINIONEREC.is_dir():
        sys.exit(f"{MINIONEREC} not found")
    started = time.perf_counter()
    policy, tokenizer, meta, frame = build(0)
    base = rlt.RLSettings(num_generations=16, rollout_batch_size=32)
    sid_dict, title_dict, _ = rlt.build_dictionaries(tokenizer, meta, policy.config.vocab_size, True)
    examples = rlt.build_examples(frame.sample(frac=1.0, random_state=0), tokenizer, sid_dict, title_dict, base)
    sid_ex = [e for e in examples if e.is_sid][: args.prompts]
    title_ex = [e for e in examples if not e.is_sid][: args.prompts]
    pad = tokenizer.pad_token_id
    print(f"# {len(sid_dict.sequences)} items, k = 16, {len(sid_ex)} SID prompts, {len(title_ex)} title prompts, "
          f"random weights, built in {time.perf_counter() - started:.0f} s, load average {os.getloadavg()}")
    print("| guide_depth | stage (scheduled guide) | hard groups | mean guide | mean group size | one-item groups | non-zero advantage |")
    print("|---|---|---|---|---|---|---|")
    variants = [("schedule", None)] + [("items", m) for m in args.min_items]
    for step, scheduled in ((1, 2), (2, 1), (3, 0)):
        for depth, min_items in variants:
            settings = rlt.RLSettings(**{**base.__dict__, "guide_depth": depth, "guide_min_items": min_items or 2})
            with torch.no_grad():
                groups = rlt.rollout(policy, sid_ex, sid_dict, None, settings, step, 3, pad)
            hard = [g for g in groups if g.hard]
            name = depth if min_items is None else f"items (>= {min_items})"
            print(f"| {name} | {scheduled} | {len(hard)} | {statistics.mean(g.guide for g in hard):.2f} | "
                  f"{statistics.mean(len(g.candidates) for g in hard):.1f} | "
                  f"{sum(len(g.candidates) == 1 for g in hard) / len(hard):.0%} | "
                  f"{sum(nonzero(g.rewards) for g in hard) / len(hard):.0%} |")
    with torch.no_grad():
        groups = rlt.rollout(policy, title_ex, sid_dict, title_dict, base, 3, 3, pad)
    hard = [(g, e) for g, e in zip(groups, title_ex) if g.hard]
    print()
    print("| title_reward | hard title groups | non-zero advantage | best reward shares more of the target than beam top |")
    print("|---|---|---|---|")
    for kind in TITLE_REWARDS:
        signal = towards = 0
        for group, ex in hard:
            rewards = group_rewards(group.candidates, ex.target, True, "full", 0.5, hierarchical=False, title_reward=kind)
            signal += nonzero(rewards)
            best = max(range(len(rewards)), key=lambda i: rewards[i])
            towards += match_depth(group.candidates[best], ex.target) > match_depth(group.candidates[0], ex.target)
        print(f"| {kind} | {len(hard)} | {signal / len(hard):.0%} | {towards / len(hard):.0%} |")
    print(f"# done in {time.perf_counter() - started:.0f} s, load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
