"""A tiny trained-from-nothing model folder (random scratch Qwen2) for evaluate/recommend tests."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from singer_rec import modeling
from singer_rec.prompts import DEFAULT_SEMANTIC_TEMPLATE, render_for_model, semantic_prompt
from singer_rec.sid.tokens import sid_tokens

TINY_MODEL = {"preset": "scratch", "scratch": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                               "num_key_value_heads": 1, "intermediate_size": 64,
                                               "max_position_embeddings": 256, "tokenizer_vocab_size": 300}}
# 12 items: 3-level SIDs plus one collision group that carries a 4th (suffix) token
SIDS = {
    "i0": "<a_0><b_0><c_0>", "i1": "<a_0><b_0><c_1>", "i2": "<a_0><b_1><c_0>", "i3": "<a_0><b_1><c_2>",
    "i4": "<a_1><b_0><c_0>", "i5": "<a_1><b_2><c_1>", "i6": "<a_1><b_2><c_2>", "i7": "<a_2><b_0><c_1>",
    "i8": "<a_2><b_1><c_1>", "i9": "<a_2><b_2><c_0><d_0>", "i10": "<a_2><b_2><c_0><d_1>", "i11": "<a_1><b_1><c_1>",
}
TITLES = {item: f"Widget number {item[1:]}" for item in SIDS}
TITLES["i11"] = TITLES["i10"]  # two items share a title: resolving it by title must fail clearly
CORPUS = list(TITLES.values()) * 3 + [DEFAULT_SEMANTIC_TEMPLATE, render_for_model("")]

TEST_SEQUENCES = pd.DataFrame({
    "user_id": ["u1", "u2", "u3", "u4", "u5", "u6"],
    "history": [["i0", "i1"], ["i2"], ["i3", "i4", "i5"], ["i6", "i7", "i8", "i9"], ["i10"], ["i1", "i11"]],
    "target": ["i2", "i3", "i6", "i10", "i0", "i5"],
    "timestamp": [1, 2, 3, 4, 5, 6],
})
VALID_SEQUENCES = TEST_SEQUENCES.assign(target=["i1", "i4", "i7", "i9", "i11", "i8"])


def build_tiny_folder(path: Path) -> Path:
    vocab = modeling.sid_vocabulary_for(SIDS.values())
    model, tokenizer = modeling.build_model(TINY_MODEL, CORPUS, vocab, seed=0)
    with torch.no_grad():  # random init is nearly uniform: sharpen it so rankings are well separated
        model.model.embed_tokens.weight.mul_(30.0)
    meta = {"preset": "scratch", "sid_map": SIDS, "titles": TITLES,
            "templates": {"semantic": [DEFAULT_SEMANTIC_TEMPLATE]}, "train": {}}
    return modeling.save_model_folder(model, tokenizer, meta, path)


@torch.inference_mode()
def exhaustive_ranking(folder: Path, history: list[str]) -> tuple[list[str], dict[str, float]]:
    """Every item's log-prob after the semantic prompt, by plain forward passes; items best first."""
    model, tokenizer, meta = modeling.load_model_folder(folder)
    prompt = tokenizer(render_for_model(semantic_prompt([SIDS[h] for h in history])), add_special_tokens=False)["input_ids"]
    scores = {}
    for item, sid in SIDS.items():
        answer = tokenizer.convert_tokens_to_ids(sid_tokens(sid))
        ids = torch.tensor([prompt + answer])
        logp = model(input_ids=ids).logits[0].float().log_softmax(-1)
        scores[item] = sum(float(logp[p - 1, ids[0, p]]) for p in range(len(prompt), ids.shape[1]))
    return sorted(scores, key=lambda i: -scores[i]), scores
