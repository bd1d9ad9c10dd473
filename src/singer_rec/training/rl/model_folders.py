"""Model folders the RL stage starts from: a base model with the catalog's SID tokens, a retargeted copy."""
from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from singer_rec.sid.tokens import sid_tokens

def build_base_model_folder(model_cfg: Mapping[str, Any], items, item_sids, templates: Mapping[str, Any],
                            seed: int, folder: Path) -> Path:
    """The RL-only variant's start: a base preset (no SFT) with the catalog's SID tokens, as a model folder."""
    from singer_rec import modeling
    from singer_rec.training.sft import tokenizer_corpus

    sid_map = dict(zip(item_sids["item_id"].astype(str), item_sids["sid"].astype(str)))
    sid_vocab = modeling.sid_vocabulary_for(sid_map.values())
    tokenizer = None
    if model_cfg["preset"] == "scratch":
        scratch = {**modeling.SCRATCH_DEFAULTS, **(model_cfg.get("scratch") or {})}
        tokenizer = modeling.train_scratch_tokenizer(tokenizer_corpus(items, templates), scratch["tokenizer_vocab_size"])
    model, tokenizer = modeling.build_model(model_cfg, [], sid_vocab, seed=seed, tokenizer=tokenizer)
    meta = {
        "preset": model_cfg["preset"],
        "sid_map": sid_map,
        "titles": dict(zip(items["item_id"].astype(str), items["title"].astype(str))),
        "templates": dict(templates),
        "train": {"model": dict(model_cfg), "note": "RL-only variant: base model, no SFT"},
    }
    return modeling.save_model_folder(model, tokenizer, meta, folder)


def retarget_model_folder(source: Path, items, item_sids, folder: Path) -> Path:
    """A copy of a trained model folder that speaks another domain's items (the unseen-domain study).

    The weights and tokenizer stay; ``sid_map`` and ``titles`` become the new catalog's. Every SID
    token of the new catalog must already be a token of the model (same codebook shape), else a
    clear error. Written to a temporary sibling and renamed into place.
    """
    import tempfile

    from transformers import AutoTokenizer

    from singer_rec import modeling

    source, folder = Path(source), Path(folder)
    meta = modeling.read_meta(source)
    tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    sid_map = dict(zip(item_sids["item_id"].astype(str), item_sids["sid"].astype(str)))
    vocab = tokenizer.get_vocab()
    missing = sorted({t for sid in sid_map.values() for t in sid_tokens(sid)} - set(vocab))
    if missing:
        raise ValueError(f"model {source} lacks {len(missing)} SID token(s) of the new catalog (e.g. {missing[:5]}): "
                         "the two domains need the same codebook shape")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        staged = tmp / "folder"
        shutil.copytree(source, staged)
        new_meta = {**meta, "sid_map": sid_map, "titles": dict(zip(items["item_id"].astype(str), items["title"].astype(str))),
                    "unseen_domain": {"trained_on": str(source), "trained_items": len(meta["sid_map"])}}
        (staged / modeling.META_FILE).write_text(json.dumps(new_meta, indent=1, ensure_ascii=False), encoding="utf-8")
        modeling.replace_folder_atomically(staged, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
