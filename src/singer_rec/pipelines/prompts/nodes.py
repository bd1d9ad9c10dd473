"""Thin nodes over ``singer_rec.prompts``."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from singer_rec.params import from_params, rule
from singer_rec.prompts import SEQUENCE_TASKS, TASKS, PromptBuilder, heldout_users

logger = logging.getLogger(__name__)


@dataclass
class PromptsParams:
    """``params:prompts``: the task lists of SFT and RL, the templates (several per task), and
    which train users' sequences each stage sees.

    ``rl_heldout_share`` > 0 keeps a seeded share of the train users' sequences out of SFT;
    ``rl_users`` then picks RL's sequence prompts: ``heldout`` (only those users: prompts the SFT
    model has not trained on), ``seen`` (only the others, the users SFT trained on: the control on
    the same SFT model) or ``all``. Item-task rows are the same in both stages whatever the split.
    """

    history_length: int = field(default=10, metadata=rule(ge=1))
    description_max_chars: int = field(default=400, metadata=rule(ge=1))
    sft_tasks: list[str] = field(default_factory=lambda: list(TASKS))
    rl_tasks: list[str] = field(default_factory=lambda: list(TASKS))
    templates: dict[str, list[str]] = field(default_factory=dict)
    rl_heldout_share: float = field(default=0.0, metadata=rule(ge=0.0, lt=1.0))
    rl_users: str = field(default="all", metadata=rule(choices=("all", "heldout", "seen")))

    def check(self, where: str) -> None:
        if self.rl_users != "all" and self.rl_heldout_share == 0:
            raise ValueError(f"{where}.rl_users={self.rl_users!r} needs {where}.rl_heldout_share > 0")
        for key in ("sft_tasks", "rl_tasks"):
            tasks = getattr(self, key)
            if not tasks:
                raise ValueError(f"{where}.{key} must name at least one task of {list(TASKS)}")
            for task in tasks:
                if task not in TASKS:
                    raise ValueError(f"{where}.{key}: unknown task {task!r}; allowed: {list(TASKS)}")
                if not self.templates.get(task):
                    raise ValueError(f"{where}.templates.{task}: no template for a task of {where}.{key}")
        unknown = sorted(set(self.templates) - set(TASKS))
        if unknown:
            raise ValueError(f"{where}.templates: unknown task(s) {unknown}; allowed: {list(TASKS)}")


def _builder(items: pd.DataFrame, item_sids: pd.DataFrame, config: PromptsParams, seed: int) -> PromptBuilder:
    return PromptBuilder(items, item_sids, config.templates, history_length=config.history_length,
                         description_max_chars=config.description_max_chars, seed=seed)


def _train_users(train_sequences: pd.DataFrame, config: PromptsParams, seed: int, stage: str) -> pd.DataFrame:
    """The train sequences that ``stage`` (``sft`` or ``rl``) sees under the held-out user split."""
    if config.rl_heldout_share == 0 or (stage == "rl" and config.rl_users == "all"):
        return train_sequences
    try:
        heldout = heldout_users(train_sequences["user_id"], config.rl_heldout_share, seed)
    except ValueError as error:
        raise ValueError(f"prompts.rl_heldout_share on train_sequences: {error}") from None
    keep_heldout = stage == "rl" and config.rl_users == "heldout"
    mask = train_sequences["user_id"].astype(str).isin(heldout) == keep_heldout
    logger.info("%s sees %d of %d train sequences (%s users of a %.0f%% held-out split)", stage, int(mask.sum()),
                len(train_sequences), "held-out" if keep_heldout else "non-held-out", 100 * config.rl_heldout_share)
    return train_sequences[mask].reset_index(drop=True)


def _log_counts(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    logger.info("%s: %d rows %s", name, len(frame), frame["task"].value_counts().to_dict())
    return frame


def build_sft_train(items: pd.DataFrame, item_sids: pd.DataFrame, train_sequences: pd.DataFrame,
                    params: dict[str, Any], seed: int) -> pd.DataFrame:
    """SFT training rows: ``params.sft_tasks`` over the train sequences (less RL's held-out users)
    and the items."""
    config = from_params(PromptsParams, params, "prompts")
    sequences = _train_users(train_sequences, config, seed, "sft")
    frame = _builder(items, item_sids, config, seed).build(config.sft_tasks, sequences, "train_sequences")
    return _log_counts("sft_dataset_train", frame)


def build_sft_valid(items: pd.DataFrame, item_sids: pd.DataFrame, valid_sequences: pd.DataFrame,
                    params: dict[str, Any], seed: int) -> pd.DataFrame:
    """SFT validation rows: the sequence tasks of ``params.sft_tasks`` over the valid sequences.

    Item tasks are left out: their rows would repeat the training rows (same items).
    """
    config = from_params(PromptsParams, params, "prompts")
    tasks = [t for t in config.sft_tasks if t in SEQUENCE_TASKS]
    frame = _builder(items, item_sids, config, seed).build(tasks, valid_sequences, "valid_sequences", item_tasks=False)
    return _log_counts("sft_dataset_valid", frame)


def build_rl_dataset(items: pd.DataFrame, item_sids: pd.DataFrame, train_sequences: pd.DataFrame,
                     params: dict[str, Any], seed: int) -> pd.DataFrame:
    """RL rows: ``params.rl_tasks`` over the train sequences of ``params.rl_users`` and the items."""
    config = from_params(PromptsParams, params, "prompts")
    sequences = _train_users(train_sequences, config, seed, "rl")
    frame = _builder(items, item_sids, config, seed + 1).build(config.rl_tasks, sequences, "train_sequences")
    return _log_counts("rl_dataset", frame)
