"""A tiny, learnable catalog for training tests: item k is usually followed by item k+1."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from singer_rec.prompts import PAPER_TEMPLATES, PromptBuilder
from singer_rec.sid.tokens import format_sid

TINY_MODEL = {"preset": "scratch", "scratch": {
    "hidden_size": 48, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
    "intermediate_size": 96, "max_position_embeddings": 256, "tokenizer_vocab_size": 400}}


def tiny_tables(n_items: int = 16, n_users: int = 48, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = [f"item{k:02d}" for k in range(n_items)]
    items = pd.DataFrame({
        "item_id": ids,
        "title": [f"Widget {k} deluxe" for k in range(n_items)],
        "description": [f"A widget of size {k}." for k in range(n_items)],
        "brand": ["Acme"] * n_items,
        "categories": [["Tools", "Widgets"]] * n_items,
    })
    item_sids = pd.DataFrame({"item_id": ids, "sid": [format_sid([k // 4, k % 4, (k * 3) % 4]) for k in range(n_items)],
                              "codes": [[k // 4, k % 4, (k * 3) % 4] for k in range(n_items)]})
    rows = {"train": [], "valid": []}
    for u in range(n_users):
        start = int(rng.integers(n_items))
        seq = [ids[(start + j) % n_items] for j in range(5)]
        rows["train"].append({"user_id": f"u{u}", "history": seq[:3], "target": seq[3], "timestamp": 3})
        rows["valid"].append({"user_id": f"u{u}", "history": seq[:4], "target": seq[4], "timestamp": 4})
    return items, item_sids, pd.DataFrame(rows["train"]), pd.DataFrame(rows["valid"])


def write_tiny_inputs(folder: Path, tasks=("semantic", "title_to_sid"), **kwargs) -> dict[str, str]:
    """Parquet inputs of the SFT entry point under ``folder``; returns their paths by config key."""
    items, item_sids, train_seq, valid_seq = tiny_tables(**kwargs)
    builder = PromptBuilder(items, item_sids, PAPER_TEMPLATES, seed=0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"train_path": folder / "train.parquet", "valid_path": folder / "valid.parquet",
             "items_path": folder / "items.parquet", "item_sids_path": folder / "item_sids.parquet"}
    builder.build(list(tasks), train_seq, "train_sequences").to_parquet(paths["train_path"])
    builder.build(["semantic"], valid_seq, "valid_sequences", item_tasks=False).to_parquet(paths["valid_path"])
    items.to_parquet(paths["items_path"])
    item_sids.to_parquet(paths["item_sids_path"])
    return {k: str(v) for k, v in paths.items()}


def tiny_config(tmp: Path, **overrides) -> dict:
    cfg = {
        **write_tiny_inputs(tmp / "inputs"),
        "output_dir": str(tmp / "out" / "model"),
        "checkpoint_dir": str(tmp / "ckpt"),
        "result_path": str(tmp / "result.json"),
        "model": TINY_MODEL,
        "templates": PAPER_TEMPLATES,
        "seed": 3,
        "learning_rate": 3e-3,
        "batch_size": 16,
        "micro_batch_size": 8,
        "epochs": 3,
        "patience": 1,
        "max_length": 128,
        "autocast": "off",
        "checkpoint_every": 2,
        "num_threads": 1,
    }
    cfg.update(overrides)
    return cfg
