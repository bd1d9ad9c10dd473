"""The RL settings (``parameters_rl.yml`` -> ``rl.settings``) and the checks that run before any model loads."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from singer_rec.params import check_fields, from_params, rule
from singer_rec.rl.curriculum import GUIDE_DEPTHS
from singer_rec.rl.rewards import REWARD_VARIANTS, TITLE_REWARDS
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
    # k: beam width = rollouts per prompt; >= 2 for group-relative advantages
    num_generations: int = field(default=16, metadata=rule(ge=2))
    reward: str = field(default="full", metadata=rule(choices=tuple(REWARD_VARIANTS)))  # acc|acc+rank|full|sid-all
    sampling: str = field(default="beam+prefix", metadata=rule(choices=SAMPLING_VARIANTS))
    alignment: str = field(default="full", metadata=rule(choices=ALIGNMENT_VARIANTS))  # RL keeps them for rl/full
    sid_reward_decay: float = field(default=0.5, metadata=rule(gt=0, lt=1))  # λ of Eq. 8: 0 <= 1 - λ^k < 1
    title_reward: str = field(default="acc-rank", metadata=rule(choices=TITLE_REWARDS))  # hard title samples
    # schedule (paper, Eq. 3-5) | items (back off to >= guide_min_items items)
    guide_depth: str = field(default="schedule", metadata=rule(choices=GUIDE_DEPTHS))
    guide_min_items: int = field(default=2, metadata=rule(ge=2))  # a one-item group has zero advantage
    # rollouts and update forwards: auto (bf16 on a GPU that supports it, float32 on a CPU) | bf16 | off
    autocast: str = field(default="auto", metadata=rule(choices=common.AUTOCAST_MODES))
    beta: float = field(default=0.1, metadata=rule(ge=0))  # KL weight (k3 estimator)
    disable_dropout: bool = False      # update forwards in eval mode: policy = reference at step 1 (KL 0)
    epsilon: float = field(default=0.2, metadata=rule(gt=0, lt=1))
    learning_rate: float = 1e-5
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    max_grad_norm: float = 1.0
    batch_size: int = field(default=512, metadata=rule(ge=1))  # prompts (training samples) per optimiser step
    micro_batch_size: int = field(default=32, metadata=rule(ge=1))  # sequences per forward/backward
    rollout_batch_size: int = field(default=32, metadata=rule(ge=1))  # prompts per decoder call
    epochs: int = field(default=2, metadata=rule(ge=1))
    max_steps: int | None = field(default=None, metadata=rule(ge=1))  # cap on T (demo / tests)
    max_prompts: int | None = None     # use only the first N rows of rl_dataset (after shuffling)
    num_iterations: int = field(default=1, metadata=rule(ge=1))  # μ
    semantic_tasks: list[str] = field(default_factory=lambda: ["semantic"])  # tasks kept without RL alignment
    sample_top_k: int | None = None    # "common" sampling: top-k (None = all allowed tokens)
    dynamic_oversample: float = field(default=1.5, metadata=rule(ge=1))  # "dynamic" sampling: draw 1.5 k, keep distinct
    probe_prompts: int = 64            # fixed prompts whose rollout rewards are measured before/after RL
    checkpoint_every: int = 0          # optimiser steps between checkpoints (0 = only at the end)
    # steps between valid rankings (before step 1 and at the end too); 0 = none
    valid_every: int = field(default=0, metadata=rule(ge=0))
    # seeded sample of sft_dataset_valid's SID-answer rows (null: all)
    valid_ranking_rows: int | None = field(default=500, metadata=rule(ge=1))
    valid_num_beams: int = field(default=20, metadata=rule(ge=10))  # NDCG@10 needs ten ranked items
    # valid: the RL model is the step with the best valid NDCG@10 (step 0 = the start model)
    select: str = field(default="last", metadata=rule(choices=SELECT_RULES))
    seed: int = 42
    num_threads: int | None = field(default=None, metadata=rule(ge=1))  # torch threads in the RL process (null: torch default)
    gradient_checkpointing: bool = False  # update forwards recompute layer activations: less memory, no shared prompt cache

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None, where: str = "rl.settings") -> RLSettings:
        """Settings from a mapping; names the unknown key, the wrong type or the out-of-range value."""
        return from_params(cls, values, where)

    def check(self, where: str) -> None:
        if self.select == "valid" and self.valid_every == 0:
            raise ValueError(f"{where}: select: valid needs valid_every >= 1 (the steps at which valid is ranked)")


def validate_settings(settings: RLSettings, num_items: int | None = None, where: str = "rl.settings") -> RLSettings:
    """Fail fast, before any model is loaded, on settings built directly (``from_dict`` checks as it
    builds) or on a ``num_generations`` larger than a catalogue of ``num_items`` items."""
    check_fields(settings, where)
    if num_items is not None:
        check_catalog_size(settings, num_items)
    return settings


def check_catalog_size(settings: RLSettings, num_items: int) -> None:
    """Beam search returns ``num_generations`` distinct items only from a catalogue at least that large."""
    if settings.num_generations > num_items:
        raise ValueError(
            f"rl num_generations (k={settings.num_generations}) is larger than the item catalog ({num_items} items): "
            "beam search cannot return k distinct items"
        )
