"""Thin nodes over ``singer_rec.prompts``."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from singer_rec.params import from_params, rule
from singer_rec.prompts import SEQUENCE_TASKS, TASKS, PromptBuilder

logger = logging.getLogger(__name__)


@dataclass
class PromptsParams:
    """``params:prompts``: the task lists of SFT and RL and the templates (several per task)."""

    history_length: int = field(default=10, metadata=rule(ge=1))
    description_max_chars: int = field(default=400, metadata=rule(ge=1))
    sft_tasks: list[str] = field(default_factory=lambda: list(TASKS))
    rl_tasks: list[str] = field(default_factory=lambda: list(TASKS))
    templates: dict[str, list[str]] = field(default_factory=dict)

    def check(self, where: str) -> None:
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


def _builder(items: pd.DataFrame, item_sids: pd.DataFrame, params: dict[str, Any], seed: int) -> PromptBuilder:
    config = from_params(PromptsParams, params, "prompts")
    return PromptBuilder(items, item_sids, config.templates, history_length=config.history_length,
                         description_max_chars=config.description_max_chars, seed=seed)


def _log_counts(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    logger.info("%s: %d rows %s", name, len(frame), frame["task"].value_counts().to_dict())
    return frame


def build_sft_train(items: pd.DataFrame, item_sids: pd.DataFrame, train_sequences: pd.DataFrame,
                    params: dict[str, Any], seed: int) -> pd.DataFrame:
    """SFT training rows: ``params.sft_tasks`` over the train sequences and the items."""
    frame = _builder(items, item_sids, params, seed).build(params["sft_tasks"], train_sequences, "train_sequences")
    return _log_counts("sft_dataset_train", frame)


def build_sft_valid(items: pd.DataFrame, item_sids: pd.DataFrame, valid_sequences: pd.DataFrame,
                    params: dict[str, Any], seed: int) -> pd.DataFrame:
    """SFT validation rows: the sequence tasks of ``params.sft_tasks`` over the valid sequences.

    Item tasks are left out: their rows would repeat the training rows (same items).
    """
    tasks = [t for t in params["sft_tasks"] if t in SEQUENCE_TASKS]
    frame = _builder(items, item_sids, params, seed).build(tasks, valid_sequences, "valid_sequences", item_tasks=False)
    return _log_counts("sft_dataset_valid", frame)


def build_rl_dataset(items: pd.DataFrame, item_sids: pd.DataFrame, train_sequences: pd.DataFrame,
                     params: dict[str, Any], seed: int) -> pd.DataFrame:
    """RL rows: ``params.rl_tasks`` over the train sequences and the items."""
    frame = _builder(items, item_sids, params, seed + 1).build(params["rl_tasks"], train_sequences, "train_sequences")
    return _log_counts("rl_dataset", frame)
