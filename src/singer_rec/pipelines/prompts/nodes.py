"""Thin nodes over ``singer_rec.prompts``."""
from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from singer_rec.prompts import SEQUENCE_TASKS, PromptBuilder

logger = logging.getLogger(__name__)


def _builder(items: pd.DataFrame, item_sids: pd.DataFrame, params: dict[str, Any], seed: int) -> PromptBuilder:
    return PromptBuilder(items, item_sids, params["templates"], history_length=params["history_length"],
                         description_max_chars=params["description_max_chars"], seed=seed)


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
