"""Rollouts: one constrained decode per prompt gives its group, guided hard samples, rewards."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from singer_rec.rl.curriculum import guide_length, guide_length_by_items
from singer_rec.rl.rewards import group_rewards
from singer_rec.training import common
from singer_rec.training.rl.examples import Dictionary, Example
from singer_rec.training.rl.settings import RLSettings
from singer_rec.training.rl.timing import NO_TIMER, PhaseTimer

@dataclass
class Group:
    """One prompt's rollout group, ready for the loss."""

    prompt_ids: list[int]              # prompt (+ the forced SID prefix of a guided hard sample)
    completions: list[list[int]]       # generated tokens after the prompt/prefix, one per candidate
    rewards: list[float]
    hard: bool                         # the unguided rollout had no hit
    hit: bool                          # the unguided rollout contained the target
    guide: int                         # forced prefix length (0 if none)
    is_sid: bool
    candidates: list[tuple[int, ...]] = field(default_factory=list)  # full token sequences, beam order


def amp_dtype(model, settings: RLSettings) -> torch.dtype | None:
    """The autocast dtype of ``settings.autocast`` on the model's device (None: float32)."""
    return common.autocast_dtype(next(model.parameters()).device, settings.autocast)


def _decode(model, prompts, dictionary: Dictionary, settings: RLSettings, k: int, forced, generator, pad_id):
    """Item indices per prompt, best first, from the configured sampler."""
    from singer_rec import decoding

    amp = amp_dtype(model, settings)
    if settings.sampling in ("beam", "beam+prefix"):
        return decoding.beam_search(
            model, prompts, dictionary.trie, num_beams=k, num_return=k,
            forced_prefixes=forced, batch_size=settings.rollout_batch_size, pad_token_id=pad_id, autocast_dtype=amp,
        ).items
    dynamic = settings.sampling == "dynamic"
    return decoding.sample(
        model, prompts, dictionary.trie, num_samples=k,
        top_k=None if dynamic else settings.sample_top_k,
        oversample=settings.dynamic_oversample if dynamic else 1.0, dedupe=dynamic,
        forced_prefixes=forced, generator=generator, batch_size=settings.rollout_batch_size, pad_token_id=pad_id,
        autocast_dtype=amp,
    ).items


def rollout(
    model,
    examples: Sequence[Example],
    sid_dict: Dictionary,
    title_dict: Dictionary | None,
    settings: RLSettings,
    step: int,
    total_steps: int,
    pad_token_id: int,
    generator: torch.Generator | None = None,
    guide: bool = True,
    timer: PhaseTimer = NO_TIMER,
) -> list[Group]:
    """Roll out the current policy on ``examples`` and score each group (Eq. 3-9)."""
    groups: list[Group | None] = [None] * len(examples)
    for is_sid, dictionary in ((True, sid_dict), (False, title_dict)):
        rows = [i for i, ex in enumerate(examples) if ex.is_sid == is_sid]
        if not rows:
            continue
        k = min(settings.num_generations, len(dictionary.sequences))
        with timer("rollout_sid" if is_sid else "rollout_title"):
            items = _decode(model, [examples[i].prompt_ids for i in rows], dictionary, settings, k, None, generator,
                            pad_token_id)
        guided: list[tuple[int, int]] = []  # (row, guide length)
        for row, found in zip(rows, items):
            ex = examples[row]
            candidates = [dictionary.sequences[j] for j in found]
            hit = ex.target in candidates
            groups[row] = Group(ex.prompt_ids, [list(c) for c in candidates], [], not hit, hit, 0, is_sid, candidates)
            if not hit and is_sid and guide and settings.sampling == "beam+prefix":
                length = guide_length(step, total_steps, len(ex.target))
                if settings.guide_depth == "items":
                    length = guide_length_by_items(length, ex.target, lambda p, t=dictionary.trie: t.items_under(t.walk(p)),
                                                   settings.guide_min_items)
                if length > 0:
                    guided.append((row, length))
        if guided:
            forced = [list(examples[r].target[:n]) for r, n in guided]
            # the decoder returns min(k, items under the prefix) continuations per prompt
            with timer("rollout_guided"):
                found_lists = _decode(model, [examples[r].prompt_ids for r, _ in guided], dictionary, settings, k,
                                      forced, generator, pad_token_id)
            for (row, length), prefix, found in zip(guided, forced, found_lists):
                candidates = [dictionary.sequences[j] for j in found]
                groups[row] = Group(
                    examples[row].prompt_ids + prefix, [list(c[length:]) for c in candidates], [],
                    True, False, length, True, candidates,
                )
        with timer("rewards"):
            for row in rows:
                group, ex = groups[row], examples[row]
                group.rewards = group_rewards(
                    group.candidates, ex.target, group.hard, settings.reward,
                    settings.sid_reward_decay, hierarchical=is_sid, title_reward=settings.title_reward,
                )
    return groups  # type: ignore[return-value]


def has_zero_advantage(group: Group) -> bool:
    """Equal rewards (or a one-item group): Eq. 1 gives zero advantages, so the group adds no policy
    gradient, only the KL term."""
    return len(set(group.rewards)) <= 1


def rollout_stats(groups: Sequence[Group]) -> dict[str, float]:
    """Per-step rollout statistics summed over this process (divided after the all-reduce)."""
    rewards = [r for g in groups for r in g.rewards]
    hard = [g for g in groups if g.hard]
    return {
        "prompts": float(len(groups)),
        "hits": float(sum(g.hit for g in groups)),
        "hard": float(len(hard)),
        "guide_sum": float(sum(g.guide for g in hard)),
        "zero_advantage": float(sum(map(has_zero_advantage, groups))),
        "reward_sum": float(sum(rewards)),
        "rewards": float(len(rewards)),
    }
