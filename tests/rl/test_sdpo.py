"""S-DPO: exact loss values, the negative sampler, and the trainer on the tiny world (learning, resume)."""
import copy
import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from singer_rec import modeling
from singer_rec.baselines.sdpo_loss import sample_negatives, sdpo_loss
from singer_rec.training import sdpo as trainer
from tiny_world import build, write


def _t(*values):
    return torch.tensor(values, dtype=torch.float64)


def _loss(chosen_delta, rejected_deltas, beta):
    """The loss of one prompt from its Δ values (reference log-probs 0)."""
    zeros = torch.zeros(1, len(rejected_deltas), dtype=torch.float64)
    return float(sdpo_loss(_t(chosen_delta), _t(*rejected_deltas)[None], _t(0.0), zeros, beta).losses[0])


def test_exact_values():
    # equal answers: -log σ(-log n) = log(1 + n)
    assert _loss(0.0, [0.0], 1.0) == pytest.approx(math.log(2), abs=1e-12)
    assert _loss(0.7, [0.7, 0.7, 0.7], 2.0) == pytest.approx(math.log(4), abs=1e-12)
    # β = 0.5, Δ_w = 2, Δ = [0, 0]: logits [-1, -1] -> log(1 + 2/e)
    assert _loss(2.0, [0.0, 0.0], 0.5) == pytest.approx(math.log(1 + 2 * math.exp(-1)), abs=1e-12)
    # β = 1, Δ_w = 1, Δ = [0, 1, 3]: logits [-1, 0, 2] -> log(1 + e^-1 + 1 + e^2)
    assert _loss(1.0, [0.0, 1.0, 3.0], 1.0) == pytest.approx(math.log(2 + math.exp(-1) + math.exp(2)), abs=1e-12)
    # huge margins stay finite: ~0 when the positive wins by far, ~β·(Δ_l - Δ_w) when it loses by far
    assert _loss(1000.0, [0.0], 1.0) == pytest.approx(0.0, abs=1e-12)
    assert _loss(0.0, [1000.0], 1.0) == pytest.approx(1000.0)


def test_one_negative_is_the_dpo_sigmoid_loss_with_reference_log_probs():
    pc, pr, rc, rr, beta = _t(-1.0, -4.0), _t(-2.0, -3.0)[:, None], _t(-1.5, -2.0), _t(-1.0, -3.5)[:, None], 0.5
    out = sdpo_loss(pc, pr, rc, rr, beta)
    # DPO: -log σ(β·((π_w - ref_w) - (π_l - ref_l))); row 0: 0.5·(0.5 + 1.0) = 0.75, row 1: 0.5·(-2 - 0.5) = -1.25
    expected = [math.log1p(math.exp(-0.75)), math.log1p(math.exp(1.25))]
    assert out.losses.tolist() == pytest.approx(expected, abs=1e-12)
    assert out.accuracy == 0.5  # row 0 prefers its positive, row 1 does not
    assert out.margin == pytest.approx((0.75 - 1.25) / 2)
    assert out.chosen_rewards.tolist() == pytest.approx([0.25, -1.0])


def test_gradient_raises_the_positive_and_lowers_the_hardest_negative_most():
    chosen = _t(0.0).requires_grad_()
    rejected = _t(0.0, 1.0, 2.0)[None].clone().requires_grad_()
    sdpo_loss(chosen, rejected, _t(0.0), torch.zeros(1, 3, dtype=torch.float64), 1.0).losses.sum().backward()
    assert float(chosen.grad[0]) < 0  # descending the loss raises log π(y_w)
    grads = rejected.grad[0].tolist()
    assert all(g > 0 for g in grads) and grads[2] > grads[1] > grads[0]  # softmax weights: hard negatives first
    assert sum(grads) == pytest.approx(-float(chosen.grad[0]))


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="beta must be > 0"):
        sdpo_loss(_t(0.0), _t(0.0)[None], _t(0.0), _t(0.0)[None], 0.0)
    with pytest.raises(ValueError, match=r"chosen \[B\] and rejected \[B, n\]"):
        sdpo_loss(_t(0.0), _t(0.0), _t(0.0), _t(0.0), 1.0)
    with pytest.raises(ValueError, match="need 1 <= negatives < items"):
        sample_negatives(3, [0], 3, torch.Generator().manual_seed(0))


def test_negatives_exclude_the_positive_are_distinct_seeded_and_cover_the_others():
    drawn = sample_negatives(6, [2] * 300, 3, torch.Generator().manual_seed(1))
    assert all(len(set(d)) == 3 and 2 not in d and all(0 <= j < 6 for j in d) for d in drawn)
    counts = pd.Series([j for d in drawn for j in d]).value_counts()
    assert sorted(counts.index) == [0, 1, 3, 4, 5] and counts.min() > 120  # 180 expected per item
    assert drawn == sample_negatives(6, [2] * 300, 3, torch.Generator().manual_seed(1))
    assert drawn != sample_negatives(6, [2] * 300, 3, torch.Generator().manual_seed(2))


# -- the trainer --------------------------------------------------------------------------------

def test_settings_reject_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['sdpo.train.lr'\]"):
        trainer.SDPOSettings.from_dict({"lr": 1e-3})
    with pytest.raises(ValueError, match=r"sdpo.train.beta must be > 0"):
        trainer.SDPOSettings.from_dict({"beta": 0})
    with pytest.raises(ValueError, match=r"sdpo.train.select_metric must be one of"):
        trainer.SDPOSettings.from_dict({"select_metric": "loss"})
    assert trainer.SDPOSettings.from_dict({}).num_negatives == 3


def _ranks_and_margin(model, prefs, pad_id):
    """Mean rank (1 = best) of each prompt's target among all items by answer log-prob, and the mean
    log-prob margin of the target over the other items."""
    with torch.no_grad():
        scores = trainer.answer_logprobs(model, prefs.prompts, [prefs.answers] * len(prefs.prompts), pad_id)
    target = scores[torch.arange(len(prefs.targets)), prefs.targets]
    ranks = (scores > target[:, None]).sum(1) + 1
    others = (scores.sum(1) - target) / (scores.shape[1] - 1)
    return float(ranks.float().mean()), float((target - others).mean())


def test_sdpo_steps_lower_the_loss_and_rank_the_positives_higher():
    policy, tokenizer, meta, frame = build()
    reference = copy.deepcopy(policy).requires_grad_(False)
    prefs = trainer.build_preferences(frame, tokenizer, meta["sid_map"], ["semantic"], 64, "rl frame")
    assert len(prefs.prompts) == 8 and len(prefs.answers) == 64  # the 4 title rows are another task
    settings = trainer.SDPOSettings(beta=1.0, num_negatives=3, micro_batch_size=4)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    rank_before, margin_before = _ranks_and_margin(policy, prefs, tokenizer.pad_token_id)
    batch = list(range(8))
    # the same 3 negatives per prompt at every step: the loss on one preference set must fall
    negatives = sample_negatives(64, [prefs.targets[i] for i in batch], 3, torch.Generator().manual_seed(0))
    losses = []
    for _ in range(8):
        stats = trainer.preference_step(policy, reference, prefs, batch, negatives, settings, tokenizer.pad_token_id, None)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(stats["loss"])
    rank_after, margin_after = _ranks_and_margin(policy, prefs, tokenizer.pad_token_id)
    assert losses[0] == pytest.approx(math.log(4), abs=1e-6)  # policy == reference at step 0
    assert all(later < earlier for earlier, later in zip(losses, losses[1:]))
    assert losses[-1] < 0.5 * losses[0]
    # among all 64 items, not only the 3 negatives trained against: seed 0 gives 25.5 -> 11.1, 0.06 -> 1.48
    assert rank_after < rank_before / 2
    assert margin_after > margin_before + 1.0


def _config(tmp_path, run, **settings):
    if not (tmp_path / "train.parquet").is_file():
        model_path, data_path = write(tmp_path / "inputs")
        config = json.loads((model_path / "config.json").read_text())  # dropout must stay off while training
        (model_path / "config.json").write_text(json.dumps({**config, "attention_dropout": 0.5}))
        frame = pd.read_parquet(data_path)
        frame.to_parquet(tmp_path / "train.parquet")
        frame[frame["task"] == "semantic"].to_parquet(tmp_path / "valid.parquet")
    return {"model_path": str(tmp_path / "inputs" / "sft_model"), "train_path": str(tmp_path / "train.parquet"),
            "valid_path": str(tmp_path / "valid.parquet"), "output_dir": str(tmp_path / run / "model"),
            "checkpoint_dir": str(tmp_path / run / "checkpoints"), "result_path": str(tmp_path / run / "result.json"),
            "seed": 3, "learning_rate": 1e-2, "batch_size": 4, "micro_batch_size": 4, "epochs": 2,
            "valid_num_beams": 10, "max_length": 64, "device": "cpu", "checkpoint_every": 1,
            "keep_checkpoints": 10, **settings}


def test_train_selects_on_valid_and_a_resumed_run_matches_an_uninterrupted_one(tmp_path):
    straight = trainer.train(_config(tmp_path, "straight"))
    assert straight["total_steps"] == 4 and straight["steps"] == 4 and straight["prompts"] == 8
    assert straight["resumed_from_step"] is None
    # the SFT model (step 0) and every epoch end are candidates; the chosen one is the best of them
    curve = straight["valid_curve"]
    assert [p["step"] for p in curve] == [0, 2, 4]
    best = max(curve, key=lambda p: p["NDCG@10"])
    assert straight["best_step"] == best["step"] and straight["best_metric"] == best["NDCG@10"]
    assert straight["history"][0]["loss"] == pytest.approx(math.log(4), abs=1e-6)  # policy == reference
    _, _, meta = modeling.load_model_folder(tmp_path / "straight" / "model")
    assert meta["sdpo"]["best_step"] == best["step"] and meta["sdpo"]["settings"]["beta"] == 1.0

    # the same run killed after step 2: its checkpoint of step 2 (and the best folder) survive
    config = _config(tmp_path, "resumed")
    kept = Path(config["checkpoint_dir"])
    kept.mkdir(parents=True)
    for name in ("step-00000002", "best"):
        shutil.copytree(tmp_path / "straight" / "checkpoints" / name, kept / name)
    resumed = trainer.train(config)
    assert resumed["resumed_from_step"] == 2 and [h["step"] for h in resumed["history"]] == [1, 2, 3, 4]
    assert [h["loss"] for h in resumed["history"]] == pytest.approx([h["loss"] for h in straight["history"]], abs=1e-6)
    assert resumed["valid_curve"] == straight["valid_curve"]
    assert resumed["best_step"] == straight["best_step"]
