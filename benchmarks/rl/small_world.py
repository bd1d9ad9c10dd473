"""Shared pieces of the controlled small-world RL benchmarks: the untrained policy (the size of the RL
test world) and one seeded training run scored by the probe hit rate before and after."""
from __future__ import annotations

import copy

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from singer_rec.modeling import add_sid_tokens, sid_vocabulary_for, train_scratch_tokenizer
from singer_rec.training import rl as rlt


def tiny_policy(corpus: list[str], sids, seed: int):
    """(untrained 2-layer Qwen2, scratch tokenizer of 300 tokens + the SID tokens)."""
    tokenizer = train_scratch_tokenizer(corpus, 300)
    add_sid_tokens(tokenizer, sid_vocabulary_for(sids))
    torch.manual_seed(seed)
    policy = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)).eval()
    return policy, tokenizer


def train_and_probe(policy, tokenizer, meta, rows, alignment: str, **settings) -> dict:
    """Train with the real trainer (k = 4, batch 8, every prompt probed); the result of ``train_grpo``."""
    settings = rlt.validate_settings(rlt.RLSettings(
        alignment=alignment, num_generations=4, batch_size=8, micro_batch_size=32, probe_prompts=len(rows), epochs=1000,
        **settings), len(meta["sid_map"]))
    need_titles = rlt.RL_ALIGNMENT[alignment]
    sid_dict, title_dict, _ = rlt.build_dictionaries(tokenizer, meta, len(tokenizer), need_titles)
    examples = rlt.build_examples(rows, tokenizer, sid_dict, title_dict, settings)
    return rlt.train_grpo(policy, copy.deepcopy(policy), tokenizer, examples, sid_dict, title_dict, settings,
                          progress=False)
