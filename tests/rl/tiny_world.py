"""A tiny synthetic recommendation world for the RL tests: 64 items (4x4x4 SIDs), 8 users with a
one-item history and a fixed next item, prompts from the semantic template (so the evaluate stage
builds the same prompts), a scratch tokenizer and an untrained 2-layer Qwen2 (hit rate 0 before RL)."""
from __future__ import annotations

import itertools
import random
from pathlib import Path

import pandas as pd
import torch

from singer_rec.sid.tokens import format_sid
from singer_rec.modeling import add_sid_tokens, save_model_folder, sid_vocabulary_for, train_scratch_tokenizer
from singer_rec.prompts import render_for_model, semantic_prompt

NUM_USERS = 8
TEMPLATE = "Recommend after {history}"


def build(seed: int = 0):
    """(policy, tokenizer, meta, rl_dataset frame)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    sids = [format_sid(c) for c in itertools.product(range(4), range(4), range(4))]
    items = {f"i{j:02d}": sid for j, sid in enumerate(sids)}
    titles = {item: f"Widget {j}" for j, item in enumerate(items)}
    rng = random.Random(seed)
    sampled = rng.sample(sorted(items), 2 * NUM_USERS)
    history_items, target_items = sampled[:NUM_USERS], sampled[NUM_USERS:]
    prompts = [semantic_prompt([items[h]], TEMPLATE) for h in history_items]
    corpus = [TEMPLATE] * 5 + list(titles.values()) + [render_for_model("x")]
    tokenizer = train_scratch_tokenizer(corpus, 300)
    add_sid_tokens(tokenizer, sid_vocabulary_for(sids))
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    policy = Qwen2ForCausalLM(config).eval()
    meta = {"preset": "scratch", "sid_map": items, "titles": titles, "templates": {"semantic": [TEMPLATE]}}
    semantic = pd.DataFrame({"task": "semantic", "prompt": prompts, "answer": [items[i] for i in target_items]})
    sid_to_title = pd.DataFrame({
        "task": "sid2title", "prompt": [f"Title of {items[i]}" for i in target_items[:4]],
        "answer": [titles[i] for i in target_items[:4]],
    })
    return policy, tokenizer, meta, pd.concat([semantic, sid_to_title], ignore_index=True)


def sequences(seed: int = 0) -> pd.DataFrame:
    """The 8 users as test_sequences rows (user_id, history, target, timestamp)."""
    items = [f"i{j:02d}" for j in range(64)]
    sampled = random.Random(seed).sample(items, 2 * NUM_USERS)
    return pd.DataFrame({"user_id": [f"u{u}" for u in range(NUM_USERS)], "history": [[h] for h in sampled[:NUM_USERS]],
                         "target": sampled[NUM_USERS:], "timestamp": list(range(NUM_USERS))})


def write(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """The tiny world on disk: (model folder, rl_dataset parquet)."""
    policy, tokenizer, meta, frame = build(seed)
    model_path = save_model_folder(policy, tokenizer, meta, Path(folder) / "sft_model")
    data_path = Path(folder) / "rl_dataset.parquet"
    frame.to_parquet(data_path)
    return model_path, data_path
