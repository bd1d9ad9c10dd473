"""BIGRec's grounding step (Bao et al. 2023): generated item text -> catalogue items by embedding distance.

The LLM writes the next item's title; grounding embeds that text with the project's item encoder
(``singer_rec.sid.encoders.encode_texts``, the same one that embeds the catalogue) and ranks every
catalogue item by the L2 distance to it. As in BIGRec's code, the distances of a row are min-max
normalised and may be multiplied by ``(1 + prior)^-gamma`` with a min-max normalised prior
(popularity, or a collaborative model's scores), so that for ``gamma > 0`` a more popular item wins
between equally close ones. ``gamma = 0`` is pure grounding.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def _minmax_rows(values: np.ndarray) -> np.ndarray:
    """Each row scaled to [0, 1]; a constant row becomes all zeros."""
    low = values.min(axis=-1, keepdims=True)
    span = values.max(axis=-1, keepdims=True) - low
    return (values - low) / np.where(span > 0, span, 1.0)


def grounding_scores(generated: np.ndarray, items: np.ndarray, prior: np.ndarray | None = None,
                     gamma: float = 0.0) -> np.ndarray:
    """Scores ``[rows, items]`` (higher = better) of generated-text embeddings against item embeddings.

    ``generated`` is ``[rows, d]``, ``items`` ``[num_items, d]``; ``prior`` is ``[num_items]`` (one prior
    for every row, e.g. train popularity) or ``[rows, num_items]``. The score is
    ``-(1 + minmax(prior))^-gamma * minmax(L2 distance)``.
    """
    generated, items = np.atleast_2d(np.asarray(generated, np.float64)), np.asarray(items, np.float64)
    if generated.shape[1] != items.shape[1]:
        raise ValueError(f"grounding: generated embeddings have dim {generated.shape[1]}, items {items.shape[1]}")
    if gamma < 0:
        raise ValueError(f"grounding: gamma must be >= 0, got {gamma}")
    squared = (generated**2).sum(1)[:, None] - 2 * generated @ items.T + (items**2).sum(1)[None, :]
    distance = _minmax_rows(np.sqrt(np.clip(squared, 0.0, None)))
    if prior is not None and gamma > 0:
        prior = np.broadcast_to(np.asarray(prior, np.float64), distance.shape)
        distance = distance * (1.0 + _minmax_rows(prior)) ** -gamma
    return -distance


def ground_texts(texts: Sequence[str], item_embeddings: np.ndarray, encode: Callable[[Sequence[str]], np.ndarray],
                 prior: np.ndarray | None = None, gamma: float = 0.0) -> np.ndarray:
    """Embed generated ``texts`` with ``encode`` (the catalogue's encoder) and score every item (see above)."""
    return grounding_scores(encode(list(texts)), item_embeddings, prior, gamma)
