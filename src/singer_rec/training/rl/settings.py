"""The RL settings (``parameters_rl.yml`` -> ``rl.settings``) and the checks that run before any model loads."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from singer_rec.params import rule
from singer_rec.rl.curriculum import GUIDE_DEPTHS
from singer_rec.rl.rewards import check_decay, check_title_reward, check_variant
from singer_rec.training import common

SAMPLING_VARIANTS = ("common", "dynamic", "beam", "beam+prefix")
SELECT_RULES = ("last", "valid")
ALIGNMENT_VARIANTS = ("none", "sft", "rl", "full")
# alignment variants whose RL stage keeps the alignment tasks (paper Fig. 4a)
RL_ALIGNMENT = {"none": False, "sft": False, "rl": True, "full": True}
# alignment variants whose SFT stage was trained with the alignment tasks (paper Fig. 4a)
SFT_ALIGNMENT = {"none": False, "sft": True, "rl": False, "full": True}


@dataclass
class RLSettings:
    """Everything that shapes the RL run (``parameters_rl.yml`` -> ``rl``); defaults = the paper's settings (docs/rl.md).

    Names follow trl's ``GRPOConfig`` where they mean the same thing.
    """

    RENAMED_KEYS: ClassVar[dict[str, str]] = {"group_size": "num_generations", "clip_eps": "epsilon",
                                              "inner_updates": "num_iterations"}
    num_generations: int = 16          # k: beam width = rollouts per prompt
    reward: str = "full"               # acc | acc+rank | full | sid-all
    sampling: str = "beam+prefix"      # common | dynamic | beam | beam+prefix
    alignment: str = "full"            # none | sft | rl | full (RL keeps alignment tasks for rl/full)
    sid_reward_decay: float = 0.5      # λ of Eq. 8
    title_reward: str = "acc-rank"     # hard title samples: acc-rank (paper) | prefix | prefix-share
    guide_depth: str = "schedule"      # schedule (paper, Eq. 3-5) | items (back off to >= guide_min_items items)
    guide_min_items: int = 2           # guide_depth: items
    autocast: str = "auto"             # auto (bf16 on a GPU that supports it, float32 on a CPU) | bf16 | off: rollouts and update forwards
    beta: float = 0.1                  # KL weight (k3 estimator)
    disable_dropout: bool = False      # update forwards in eval mode: policy = reference at step 1 (KL 0)
    epsilon: float = 0.2
    learning_rate: float = 1e-5
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    max_grad_norm: float = 1.0
    batch_size: int = 512              # prompts (training samples) per optimiser step
    micro_batch_size: int = 32         # sequences per forward/backward (gradient accumulation)
    rollout_batch_size: int = 32       # prompts per decoder call
    epochs: int = 2
    max_steps: int | None = None       # cap on T (demo / tests)
    max_prompts: int | None = None     # use only the first N rows of rl_dataset (after shuffling)
    num_iterations: int = 1            # μ
    semantic_tasks: list[str] = field(default_factory=lambda: ["semantic"])  # tasks kept without RL alignment
    sample_top_k: int | None = None    # "common" sampling: top-k (None = all allowed tokens)
    dynamic_oversample: float = 1.5    # "dynamic" sampling: draw 1.5 k, keep distinct
    probe_prompts: int = 64            # fixed prompts whose rollout rewards are measured before/after RL
    checkpoint_every: int = 0          # optimiser steps between checkpoints (0 = only at the end)
    valid_every: int = 0               # steps between valid rankings (before step 1 and at the end too); 0 = none
    valid_ranking_rows: int | None = 500  # seeded sample of sft_dataset_valid's SID-answer rows (null: all)
    valid_num_beams: int = 20
    select: str = "last"               # last | valid: the RL model is the best valid NDCG@10 (step 0 = the start model)
    seed: int = 42
    num_threads: int | None = field(default=None, metadata=rule(ge=1))  # torch threads in the RL process (null: torch default)
    gradient_checkpointing: bool = False  # update forwards recompute layer activations: less memory, no shared prompt cache

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None, where: str = "rl.settings") -> RLSettings:
        """Settings from a mapping; names the unknown key or the wrong type (ranges: ``validate_settings``)."""
        from singer_rec.params import from_params

        return from_params(cls, values, where)


def validate_settings(settings: RLSettings, num_items: int | None = None) -> RLSettings:
    """Fail fast, before any model is loaded, on a configuration that cannot run."""
    check_variant(settings.reward)
    check_decay(settings.sid_reward_decay)
    check_title_reward(settings.title_reward)
    if settings.guide_depth not in GUIDE_DEPTHS:
        raise ValueError(f"unknown guide_depth {settings.guide_depth!r}; expected one of {list(GUIDE_DEPTHS)}")
    if settings.guide_min_items < 2:
        raise ValueError(f"rl guide_min_items must be >= 2 (a one-item group has zero advantage), got {settings.guide_min_items}")
    common.autocast_dtype(torch.device("cpu"), settings.autocast)  # raises on an unknown mode
    if settings.sampling not in SAMPLING_VARIANTS:
        raise ValueError(f"unknown sampling variant {settings.sampling!r}; expected one of {list(SAMPLING_VARIANTS)}")
    if settings.alignment not in ALIGNMENT_VARIANTS:
        raise ValueError(f"unknown alignment variant {settings.alignment!r}; expected one of {list(ALIGNMENT_VARIANTS)}")
    if settings.num_generations < 2:
        raise ValueError(f"rl num_generations (k) must be >= 2 for group-relative advantages, got {settings.num_generations}")
    if num_items is not None and settings.num_generations > num_items:
        raise ValueError(
            f"rl num_generations (k={settings.num_generations}) is larger than the item catalog ({num_items} items): "
            "beam search cannot return k distinct items"
        )
    for name in ("batch_size", "micro_batch_size", "rollout_batch_size", "epochs", "num_iterations"):
        if getattr(settings, name) < 1:
            raise ValueError(f"rl {name} must be >= 1, got {getattr(settings, name)}")
    if settings.max_steps is not None and settings.max_steps < 1:
        raise ValueError(f"rl max_steps must be >= 1 or null, got {settings.max_steps}")
    if not 0 < settings.epsilon < 1:
        raise ValueError(f"rl epsilon must be in (0, 1), got {settings.epsilon}")
    if settings.beta < 0:
        raise ValueError(f"rl beta must be >= 0, got {settings.beta}")
    if settings.select not in SELECT_RULES:
        raise ValueError(f"unknown rl select {settings.select!r}; expected one of {list(SELECT_RULES)}")
    if settings.valid_every < 0:
        raise ValueError(f"rl valid_every must be >= 0 (0 = no valid ranking), got {settings.valid_every}")
    if settings.select == "valid" and settings.valid_every == 0:
        raise ValueError("rl select: valid needs valid_every >= 1 (the steps at which valid is ranked)")
    if settings.valid_ranking_rows is not None and settings.valid_ranking_rows < 1:
        raise ValueError(f"rl valid_ranking_rows must be >= 1 or null, got {settings.valid_ranking_rows}")
    if settings.valid_num_beams < 10:
        raise ValueError(f"rl valid_num_beams must be >= 10 (NDCG@10 needs ten ranked items), got {settings.valid_num_beams}")
    if settings.dynamic_oversample < 1:
        raise ValueError(f"rl dynamic_oversample must be >= 1, got {settings.dynamic_oversample}")
    return settings
