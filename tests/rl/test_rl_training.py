"""The RL trainer on a tiny synthetic world: learning, determinism, resume, sampler/alignment variants."""
import copy
import math

import pytest
import torch

from singer_rec.rl.rewards import match_depth
from singer_rec.training import common
from singer_rec.training import rl as rlt
from tiny_world import build

FAST = dict(num_generations=4, batch_size=8, micro_batch_size=64, probe_prompts=8, epochs=100)


def _setup(alignment="sft", **overrides):
    policy, tokenizer, meta, frame = build()
    settings = rlt.validate_settings(rlt.RLSettings(alignment=alignment, **{**FAST, **overrides}), len(meta["sid_map"]))
    sid_dict, title_dict, _ = rlt.build_dictionaries(tokenizer, meta, len(tokenizer), rlt.RL_ALIGNMENT[alignment])
    examples = rlt.build_examples(frame, tokenizer, sid_dict, title_dict, settings)
    reference = copy.deepcopy(policy)
    return policy, reference, tokenizer, examples, sid_dict, title_dict, settings


def test_rl_raises_hit_rate_and_lowers_hard_fraction():
    policy, reference, tokenizer, examples, sid_dict, title_dict, settings = _setup(max_steps=30, learning_rate=5e-3)
    result = rlt.train_grpo(policy, reference, tokenizer, examples, sid_dict, title_dict, settings, progress=False)
    history = result["history"]
    assert len(history) == 30 and result["total_steps"] == 30
    # the untrained model finds 2 of the 8 targets among its 4 beams; after RL at least 6 of 8 (seed 0: 6)
    assert result["probe"]["before"]["hit_rate"] == 0.25
    assert result["probe"]["after"]["hit_rate"] >= 0.75
    first, last = history[:5], history[-5:]
    assert sum(h["hard_fraction"] for h in last) < sum(h["hard_fraction"] for h in first)
    assert sum(h["hit_rate"] for h in last) > sum(h["hit_rate"] for h in first)
    # the curriculum: guide lengths shrink from L-1 = 2 to 0 over T = 30 steps
    assert history[0]["guide_length"] == 2.0 and history[-1]["guide_length"] == 0.0
    # AdamW with cosine decay from the configured rate
    assert history[0]["learning_rate"] == pytest.approx(5e-3)
    assert history[10]["learning_rate"] == pytest.approx(5e-3 * 0.5 * (1 + math.cos(math.pi * 10 / 30)))
    for key in ("mean_reward", "kl", "entropy", "clip_fraction", "seconds_per_step"):
        assert all(key in h for h in history)


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_same_seed_same_result_and_resume_matches_uninterrupted(tmp_path):
    policy, reference, tokenizer, examples, sid_dict, title_dict, settings = _setup(max_steps=4, learning_rate=1e-3)
    straight = rlt.train_grpo(policy, reference, tokenizer, examples, sid_dict, title_dict, settings, progress=False)
    straight_weights = _weights(policy)

    # the same run, checkpointed every 2 steps and "killed" after step 2 (the checkpoint survives)
    policy2, reference2, *_ = _setup(max_steps=4, learning_rate=1e-3)
    settings2 = rlt.RLSettings(**{**settings.__dict__, "checkpoint_every": 2})
    rlt.train_grpo(policy2, reference2, tokenizer, examples, sid_dict, title_dict, settings2, tmp_path, progress=False)
    assert common.latest_checkpoint(tmp_path).name == "step-00000002"
    policy3, reference3, *_ = _setup(max_steps=4, learning_rate=1e-3)
    resumed = rlt.train_grpo(policy3, reference3, tokenizer, examples, sid_dict, title_dict, settings2, tmp_path, progress=False)
    assert resumed["start_step"] == 2 and [h["step"] for h in resumed["history"]] == [1, 2, 3, 4]
    for name, tensor in _weights(policy3).items():
        torch.testing.assert_close(tensor, straight_weights[name], rtol=0, atol=1e-6)
    # steps 1-2 of the interrupted run reproduced the straight run (same seed, same result), and so do 3-4
    assert [h["mean_reward"] for h in resumed["history"]] == pytest.approx([h["mean_reward"] for h in straight["history"]])


@pytest.mark.parametrize("sampling", ["common", "dynamic", "beam"])
def test_sampling_variants_run_without_guides(sampling):
    policy, reference, tokenizer, examples, sid_dict, title_dict, settings = _setup(sampling=sampling, max_steps=2, learning_rate=1e-3)
    result = rlt.train_grpo(policy, reference, tokenizer, examples, sid_dict, title_dict, settings, progress=False)
    assert [h["guide_length"] for h in result["history"]] == [0.0, 0.0]
    assert result["history"][0]["hard_fraction"] > 0  # hard samples exist, yet get no guide


def test_alignment_in_rl_decodes_titles_over_the_title_dictionary():
    policy, reference, tokenizer, examples, sid_dict, title_dict, settings = _setup(alignment="full", max_steps=1)
    titles = [e for e in examples if not e.is_sid]
    assert len(titles) == 4 and len(examples) == 12
    assert title_dict is not None and len(title_dict.sequences) == 64
    assert all(e.target[-1] == tokenizer.eos_token_id for e in titles)
    groups = rlt.rollout(policy, titles, sid_dict, title_dict, settings, 1, 1, tokenizer.pad_token_id)
    for group in groups:
        assert len(group.candidates) == 4 and all(c in title_dict.index for c in group.candidates)
        assert group.guide == 0  # titles have no SID prefix to guide with
    # without RL alignment the title rows are dropped
    *_, sft_examples, _, _, _ = _setup(alignment="sft")
    assert len(sft_examples) == 8 and all(e.is_sid for e in sft_examples)


def test_bad_configuration_fails_fast():
    with pytest.raises(ValueError, match=r"num_generations \(k=65\) is larger than the item catalog \(64 items\)"):
        rlt.validate_settings(rlt.RLSettings(num_generations=65), num_items=64)
    with pytest.raises(ValueError, match=r"rl\.settings\.sid_reward_decay must be < 1, got 1\.0"):
        rlt.validate_settings(rlt.RLSettings(sid_reward_decay=1.0))
    with pytest.raises(ValueError, match=r"rl\.settings\.sampling must be one of \[.*\], got 'beam-prefix'"):
        rlt.validate_settings(rlt.RLSettings(sampling="beam-prefix"))
    with pytest.raises(ValueError, match=r"rl\.settings\.alignment must be one of \['none', 'sft', 'rl', 'full'\], got 'both'"):
        rlt.validate_settings(rlt.RLSettings(alignment="both"))
    with pytest.raises(ValueError, match=r"rl\.settings\.reward must be one of \[.*\], got 'rank'"):
        rlt.validate_settings(rlt.RLSettings(reward="rank"))
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['rl\.settings\.grup_size'\]; allowed keys of rl\.settings"):
        rlt.RLSettings.from_dict({"grup_size": 4})
    with pytest.raises(ValueError, match=r"rl\.settings\.title_reward must be one of \[.*\], got 'prefixes'"):
        rlt.validate_settings(rlt.RLSettings(title_reward="prefixes"))
    with pytest.raises(ValueError, match=r"rl\.settings\.guide_depth must be one of \['schedule', 'items'\], got 'depth'"):
        rlt.validate_settings(rlt.RLSettings(guide_depth="depth"))
    with pytest.raises(ValueError, match=r"rl\.settings\.guide_min_items must be >= 2, got 1"):
        rlt.validate_settings(rlt.RLSettings(guide_min_items=1))
    with pytest.raises(ValueError, match=r"rl\.settings\.autocast must be one of \['auto', 'bf16', 'off'\], got 'fp16'"):
        rlt.validate_settings(rlt.RLSettings(autocast="fp16"))


def test_guide_depth_by_items_and_title_prefix_reward_from_the_settings():
    # 4x4x4 SIDs: a 2-token prefix holds 4 items, a 1-token prefix 16; with guide_min_items 5 the
    # scheduled guide of 2 tokens backs off to 1
    policy, reference, tokenizer, examples, sid_dict, title_dict, settings = _setup(
        alignment="full", guide_depth="items", guide_min_items=5, title_reward="prefix-share", max_steps=1)
    groups = rlt.rollout(policy, examples, sid_dict, title_dict, settings, 1, 3, tokenizer.pad_token_id)
    sid_hard = [g for g, e in zip(groups, examples) if e.is_sid and g.hard]
    assert sid_hard and all(g.guide == 1 and len(g.candidates) == 4 for g in sid_hard)  # k = 4 of the 16 items
    paper = rlt.rollout(policy, examples, sid_dict, title_dict, rlt.RLSettings(**{**settings.__dict__, "guide_depth": "schedule"}),
                        1, 3, tokenizer.pad_token_id)
    assert all(g.guide == 2 for g, e in zip(paper, examples) if e.is_sid and g.hard)
    for group, example in zip(groups, examples):
        if not example.is_sid and group.hard:  # κ / |y*| over the title tokens
            assert group.rewards == [match_depth(c, example.target) / len(example.target) for c in group.candidates]


def test_bf16_autocast_step_runs_the_device_path(monkeypatch):
    """An RL step with autocast (what a CUDA run does by default): rollouts and the update's forwards in
    bf16, the loss and metrics finite, and the decoder copies only each batch's result to the host."""
    copies = []
    original = torch.Tensor.cpu
    policy, reference, tokenizer, examples, sid_dict, title_dict, settings = _setup(
        alignment="full", autocast="bf16", max_steps=2, learning_rate=1e-3)
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self, *a, **k: copies.append(tuple(self.shape)) or original(self, *a, **k))
    result = rlt.train_grpo(policy, reference, tokenizer, examples, sid_dict, title_dict, settings, progress=False)
    monkeypatch.undo()
    assert rlt.amp_dtype(policy, settings) == torch.bfloat16
    for record in result["history"]:
        assert all(math.isfinite(record[key]) for key in ("loss", "kl", "entropy", "mean_reward"))
    # every host copy is a [prompts, k] block of decoded items or scores, never a step's logits
    assert copies and all(len(shape) == 2 and shape[1] <= settings.num_generations for shape in copies)


@pytest.mark.parametrize("disable_dropout", [False, True])
def test_disable_dropout_makes_the_first_update_see_the_reference(disable_dropout):
    """At step 1 the policy's weights equal the reference's. With dropout on in the update (the
    scratch model trains with attention dropout), their log-probs still differ, so the KL term is
    positive and its gradient trains dropout invariance; with ``disable_dropout`` the KL is exactly 0."""
    policy, reference, tokenizer, examples, sid_dict, title_dict, settings = _setup(
        alignment="full", disable_dropout=disable_dropout, learning_rate=0.0)
    for model in (policy, reference):
        for layer in model.model.layers:
            layer.self_attn.attention_dropout = 0.5
    with torch.no_grad():
        groups = rlt.rollout(policy, examples, sid_dict, title_dict, settings, 1, 1, tokenizer.pad_token_id, guide=False)
    optimizer, scheduler = common.optimizer_and_schedule(policy, 0.0, 0.0, 1)
    torch.manual_seed(0)
    stats = rlt.policy_update(policy, reference, groups, settings, optimizer, scheduler, tokenizer.pad_token_id,
                              common.Dist())
    if disable_dropout:
        assert stats["kl"] == 0.0
    else:
        assert stats["kl"] > 1e-5  # 2.7e-4 with this tiny random model
    assert not policy.training  # rollouts after the update run without dropout either way
