"""SINGER rewards (paper Eq. 6-9) for one rollout group.

A group is the k candidates of one prompt, best beam position first. Candidates and the target
are token sequences (a SID's tokens, or a title's tokens) compared as whole sequences: one
sequence is one item, so "the candidate is the target item" is sequence equality.

Variants (paper Fig. 4c):
  * ``acc``      R = R_acc for every sample.
  * ``acc+rank`` R = R_acc + R_rank for every sample (SINGER w/o SID).
  * ``full``     Eq. 9: normal samples R_acc + R_rank, hard samples R_reason (SINGER).
  * ``sid-all``  the SID-level reward for every sample: normal samples R_acc + R_rank + R_reason,
                 hard samples R_reason (SINGER w/ SIDALL; the paper calls it an *additional*
                 signal on easy samples, so it is added, not substituted).

Title answers have no SID levels. ``title_reward`` picks what stands in for R_reason on them:
  * ``acc-rank``      none: hard title samples fall back to R_acc + R_rank (the paper's rule, which
                      only pushes away from the top titles, whatever the target);
  * ``prefix``        1 - λ^κ with κ the number of leading title tokens equal to the target's (the
                      SID formula with tokens as levels: the brand or first words already pay);
  * ``prefix-share``  κ / |y*|: the share of the target title matched from its start (linear, no
                      saturation after a few tokens).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

TITLE_REWARDS = ("acc-rank", "prefix", "prefix-share")


def check_decay(decay: float) -> float:
    """λ must lie strictly inside (0, 1) so that 0 <= 1 - λ^k < 1 (Eq. 8)."""
    if not 0.0 < float(decay) < 1.0:
        raise ValueError(f"rl sid_reward_decay (λ) must be in the open interval (0, 1), got {decay}")
    return float(decay)


def check_variant(variant: str) -> str:
    if variant not in REWARD_VARIANTS:
        raise ValueError(f"unknown reward variant {variant!r}; expected one of {list(REWARD_VARIANTS)}")
    return variant


def check_title_reward(name: str) -> str:
    if name not in TITLE_REWARDS:
        raise ValueError(f"unknown title_reward {name!r}; expected one of {list(TITLE_REWARDS)}")
    return name


def title_prefix_rewards(
    candidates: Sequence[Sequence[Hashable]], target: Sequence[Hashable], kind: str, decay: float
) -> list[float]:
    """The title analogue of Eq. 8 by the matched leading tokens κ: ``prefix`` 1 - λ^κ, ``prefix-share`` κ/|y*|."""
    if kind == "prefix":
        return sid_level_rewards(candidates, target, decay)
    if kind == "prefix-share":
        return [match_depth(c, target) / len(target) for c in candidates]
    raise ValueError(f"title_prefix_rewards: kind must be 'prefix' or 'prefix-share', got {kind!r}")


def match_depth(candidate: Sequence[Hashable], target: Sequence[Hashable]) -> int:
    """κ(e, e*) = max{k : e_{1:k} = e*_{1:k}}: how many leading SID levels agree (0 if none)."""
    depth = 0
    for mine, theirs in zip(candidate, target):
        if mine != theirs:
            break
        depth += 1
    return depth


def accuracy_rewards(candidates: Sequence[Sequence[Hashable]], target: Sequence[Hashable]) -> list[float]:
    """Eq. 6: 1 for the target item, 0 otherwise."""
    target = tuple(target)
    return [1.0 if tuple(c) == target else 0.0 for c in candidates]


def rank_rewards(candidates: Sequence[Sequence[Hashable]], target: Sequence[Hashable]) -> list[float]:
    """Eq. 7: 0 for the target; -1/ln(p+1) for a negative at 1-based position p (list order)."""
    target = tuple(target)
    return [0.0 if tuple(c) == target else -1.0 / math.log(position + 1) for position, c in enumerate(candidates, 1)]


def sid_level_rewards(
    candidates: Sequence[Sequence[Hashable]], target: Sequence[Hashable], decay: float
) -> list[float]:
    """Eq. 8: 1 - λ^κ with κ the deepest matching SID level."""
    decay = check_decay(decay)
    return [1.0 - decay ** match_depth(c, target) for c in candidates]


def is_hard(candidates: Sequence[Sequence[Hashable]], target: Sequence[Hashable]) -> bool:
    """A sample is hard when none of its rollout candidates is the target item."""
    target = tuple(target)
    return not any(tuple(c) == target for c in candidates)


@dataclass(frozen=True)
class RewardTerms:
    """The terms a group's rewards are made of (Eq. 6-8), for a variant to combine."""

    acc: list[float]             # R_acc
    acc_rank: list[float]        # R_acc + R_rank
    reason: list[float] | None   # R_reason (SID levels, or its title stand-in); None: no stand-in
    hard: bool                   # the sample is hard: its unguided rollout had no hit


def _full(terms: RewardTerms) -> list[float]:
    return terms.reason if terms.hard and terms.reason is not None else terms.acc_rank


def _sid_all(terms: RewardTerms) -> list[float]:
    if terms.reason is None or terms.hard:
        return _full(terms)
    return [ar + s for ar, s in zip(terms.acc_rank, terms.reason)]


# variant -> how it combines the terms (paper Fig. 4c); a new variant is one function and one entry
REWARD_VARIANTS: dict[str, Callable[[RewardTerms], list[float]]] = {
    "acc": lambda terms: terms.acc,
    "acc+rank": lambda terms: terms.acc_rank,
    "full": _full,
    "sid-all": _sid_all,
}


def group_rewards(
    candidates: Sequence[Sequence[Hashable]],
    target: Sequence[Hashable],
    hard: bool,
    variant: str = "full",
    decay: float = 0.5,
    hierarchical: bool = True,
    title_reward: str = "acc-rank",
) -> list[float]:
    """The rewards of one group under a reward variant (see the module docstring).

    ``hard`` says whether the *sample* is hard (its first, unguided rollout had no hit); the
    candidates are then its guided continuations. ``hierarchical=False`` (title answers: no SID
    levels): with ``title_reward="acc-rank"`` the SID-level term is dropped, so hard title samples
    fall back to R_acc (+ R_rank); otherwise the title prefix reward takes its place.
    """
    check_variant(variant)
    check_title_reward(title_reward)
    acc = accuracy_rewards(candidates, target)
    acc_rank = [a + r for a, r in zip(acc, rank_rewards(candidates, target))]
    if hierarchical:
        reason = sid_level_rewards(candidates, target, decay)
    elif title_reward == "acc-rank":
        reason = None
    else:
        reason = title_prefix_rewards(candidates, target, title_reward, decay)
    return REWARD_VARIANTS[variant](RewardTerms(acc, acc_rank, reason, hard))
