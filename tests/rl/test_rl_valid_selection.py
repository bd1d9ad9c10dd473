"""The RL valid curve and ``select: valid``: the valid ranking runs at step 0, every ``valid_every``
steps and at the end; the kept weights are those of the best valid NDCG@10, also across a resume."""
import copy

import pytest
import torch

from singer_rec.training import common
from singer_rec.training import rl as rlt
from tiny_world import build

FAST = dict(num_generations=4, batch_size=8, micro_batch_size=64, probe_prompts=8, epochs=100, learning_rate=5e-3)


class ScriptedValidation:
    """Stands in for ``RankingValidation``: hands out the scripted NDCG@10 values in call order and
    records the policy's weights at each call."""

    def __init__(self, values):
        self.values, self.weights = list(values), []

    def evaluate(self, model, dist, batch_size, amp_dtype):
        self.weights.append({k: v.clone() for k, v in model.state_dict().items()})
        value = self.values.pop(0)
        return {"HR@3": value, "NDCG@3": value, "HR@5": value, "NDCG@5": value, "HR@10": 2 * value, "NDCG@10": value}


def _setup(**overrides):
    policy, tokenizer, meta, frame = build()
    settings = rlt.validate_settings(rlt.RLSettings(alignment="sft", **{**FAST, **overrides}), len(meta["sid_map"]))
    sid_dict, title_dict, _ = rlt.build_dictionaries(tokenizer, meta, len(tokenizer), False)
    examples = rlt.build_examples(frame, tokenizer, sid_dict, title_dict, settings)
    return policy, copy.deepcopy(policy), tokenizer, examples, sid_dict, title_dict, settings


def _assert_same(weights, expected):
    for name, tensor in weights.items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=0)


def _differs(a, b):
    return any(not torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("select", ["valid", "last"])
def test_valid_curve_points_and_the_kept_weights(select):
    policy, reference, tokenizer, examples, sid_dict, title_dict, settings = _setup(
        max_steps=5, valid_every=2, select=select)
    validation = ScriptedValidation([0.10, 0.30, 0.20, 0.25])  # steps 0, 2, 4 and the last (5)
    result = rlt.train_grpo(policy, reference, tokenizer, examples, sid_dict, title_dict, settings, progress=False,
                            validation=validation)
    curve = result["valid_curve"]
    assert [p["step"] for p in curve] == [0, 2, 4, 5]
    assert [p["NDCG@10"] for p in curve] == [0.10, 0.30, 0.20, 0.25] and curve[1]["HR@10"] == 0.60
    assert all(p["valid_seconds"] >= 0 for p in curve)
    assert curve[0]["train_seconds"] == 0.0 and curve[1]["train_seconds"] == pytest.approx(
        sum(h["seconds_per_step"] for h in result["history"][:2]), abs=1e-3)
    final = {k: v.clone() for k, v in policy.state_dict().items()}
    assert _differs(validation.weights[1], validation.weights[3])  # training moved the weights after step 2
    if select == "valid":
        assert result["selected_step"] == 2
        _assert_same(final, validation.weights[1])
    else:
        assert result["selected_step"] is None
        _assert_same(final, validation.weights[3])
        # ranking valid does not change what RL computes: the same run without it ends with the same weights
        plain, plain_reference, *_ = _setup(max_steps=5)
        rlt.train_grpo(plain, plain_reference, tokenizer, examples, sid_dict, title_dict, settings.__class__(
            **{**settings.__dict__, "valid_every": 0}), progress=False)
        _assert_same(final, plain.state_dict())
    assert not policy.training  # the ranking's train mode does not leak into the rollouts


def test_the_start_model_is_kept_when_no_step_beats_it():
    policy, reference, tokenizer, examples, sid_dict, title_dict, settings = _setup(
        max_steps=3, valid_every=1, select="valid")
    start = {k: v.clone() for k, v in policy.state_dict().items()}
    validation = ScriptedValidation([0.30, 0.10, 0.30, 0.20])  # a tie with the start keeps the start
    result = rlt.train_grpo(policy, reference, tokenizer, examples, sid_dict, title_dict, settings, progress=False,
                            validation=validation)
    assert result["selected_step"] == 0
    _assert_same(policy.state_dict(), start)


def test_a_resumed_run_selects_among_the_points_before_the_interruption(tmp_path):
    kwargs = dict(max_steps=6, valid_every=2, select="valid", checkpoint_every=2)
    policy, reference, tokenizer, examples, sid_dict, title_dict, settings = _setup(**kwargs)
    first = ScriptedValidation([0.10, 0.30, 0.20, 0.25])  # steps 0, 2, 4, 6: step 2 is the best
    straight = rlt.train_grpo(policy, reference, tokenizer, examples, sid_dict, title_dict, settings, tmp_path,
                              progress=False, validation=first)
    assert straight["selected_step"] == 2
    assert (tmp_path / "best_valid" / "model.safetensors").is_file()
    # the run is restarted from its last checkpoint (step 4): only step 6 is ranked again
    assert common.latest_checkpoint(tmp_path).name == "step-00000004"
    policy2, reference2, *_ = _setup(**kwargs)
    again = ScriptedValidation([0.25])
    resumed = rlt.train_grpo(policy2, reference2, tokenizer, examples, sid_dict, title_dict, settings, tmp_path,
                             progress=False, validation=again)
    assert resumed["start_step"] == 4
    assert [p["step"] for p in resumed["valid_curve"]] == [0, 2, 4, 6] and resumed["selected_step"] == 2
    _assert_same(policy2.state_dict(), first.weights[1])  # read back from best_valid


def test_select_valid_without_a_valid_ranking_is_refused():
    with pytest.raises(ValueError, match="select: valid needs valid_every"):
        rlt.validate_settings(rlt.RLSettings(select="valid"))
    with pytest.raises(ValueError, match=r"rl\.settings\.select must be one of \['last', 'valid'\], got 'best'"):
        rlt.validate_settings(rlt.RLSettings(select="best", valid_every=2))
    with pytest.raises(ValueError, match="valid_num_beams must be >= 10"):
        rlt.validate_settings(rlt.RLSettings(valid_every=2, valid_num_beams=5))
