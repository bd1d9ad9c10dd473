"""Our GRPO update computes the loss and gradient of trl's ``GRPOTrainer`` (``loss_type="grpo"``) on one batch.

The batch: the tiny RL world's 12 prompts (8 with SID answers, 4 with title answers; titles lengthened so completions
are 3 or 4 tokens),
one unguided beam rollout of k = 4 each (our decoder), our rewards (``full``). The frozen reference
is the policy with perturbed weights, so the KL term is not zero. Ours is the trainer's own
``policy_update`` (micro-batches of 8 sequences, gradient accumulation) at learning rate 0, so its
gradients stay in the parameters; trl's is ``_generate_and_score_completions`` (advantages,
reference log-probs) fed by a ``rollout_func`` that serves the same completions and rewards,
then ``compute_loss`` and backward on the whole batch.

The trl settings that match our formulation: ``loss_type="grpo"`` (token mean per sequence, then
mean over sequences), ``scale_rewards="group"`` ((R - mean) / (std + 1e-4), unbiased std),
``num_iterations=1`` (π_old = π_θ), the same ``beta`` and ``epsilon``, temperature 1, and
``use_bias_correction_kl=False``: trl's default multiplies the k3 KL by the ratio π_θ/π_old, which
is 1 in value but not in gradient (the test below gives the exact difference).
"""
import copy

import pytest
import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from singer_rec.rl.grpo import completion_logprobs, group_advantages, grpo_loss, k3_kl
from singer_rec.training import common
from singer_rec.training import rl as rlt
from tiny_world import build

# trl marks rollout_func experimental; the test pins trl 1.16's behaviour
pytestmark = pytest.mark.filterwarnings("ignore:You are using 'rollout_func'", "ignore:`is_gradient_checkpointing`",
                                        "ignore:`gradient_checkpointing` is deprecated")
K = 4
BETA, EPSILON = 0.1, 0.2


def longer_titles(meta, frame):
    """Titles of varied token lengths (the tiny world's are all 3 tokens), so the per-sequence
    token mean differs from a batch-wide token mean."""
    titles = {item: title + " deluxe" * (j % 3) for j, (item, title) in enumerate(sorted(meta["titles"].items()))}
    renamed = dict(zip(meta["titles"].values(), titles.values()))
    frame = frame.assign(answer=[renamed.get(a, a) if t == "sid2title" else a for t, a in zip(frame["task"], frame["answer"])])
    return {**meta, "titles": titles}, frame


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(policy, reference, its folder, tokenizer, groups, settings) of one fixed rollout."""
    policy, tokenizer, meta, frame = build()
    meta, frame = longer_titles(meta, frame)
    settings = rlt.validate_settings(rlt.RLSettings.from_dict(dict(
        alignment="full", num_generations=K, sampling="beam", beta=BETA, epsilon=EPSILON, num_iterations=1,
        micro_batch_size=8, learning_rate=0.0, max_grad_norm=0.0)))
    sid_dict, title_dict, _ = rlt.build_dictionaries(tokenizer, meta, len(tokenizer), True)
    examples = rlt.build_examples(frame, tokenizer, sid_dict, title_dict, settings)
    with torch.no_grad():
        groups = rlt.rollout(policy, examples, sid_dict, title_dict, settings, 1, 1, tokenizer.pad_token_id, guide=False)
    reference = copy.deepcopy(policy)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    folder = tmp_path_factory.mktemp("reference")
    reference.save_pretrained(folder)  # trl builds its reference from the policy's config path
    return policy, reference, folder, tokenizer, groups, settings


def serve(groups):
    """A trl ``rollout_func`` that returns the fixed groups: trl passes each prompt (here a group
    index) once per generation, consecutively, and wants one completion per row; our rewards
    travel as an extra field to the reward function."""

    def rollout_func(prompts, trainer):
        out = {"prompt_ids": [], "completion_ids": [], "logprobs": None, "beam_reward": []}
        for row, prompt in enumerate(prompts):
            group, position = groups[int(prompt)], row % K
            out["prompt_ids"].append(list(group.prompt_ids))
            out["completion_ids"].append(list(group.completions[position]))
            out["beam_reward"].append(group.rewards[position])
        return out

    return rollout_func


def beam_reward(prompts, completions, beam_reward, **kwargs):
    return list(beam_reward)


def trl_loss_and_grads(world, tmp_path, **config):
    """trl's loss on the batch, its gradients by parameter name, and its scored batch."""
    policy, _, folder, tokenizer, groups, _ = world
    model = copy.deepcopy(policy)
    model.config._name_or_path = str(folder)
    values = dict(loss_type="grpo", scale_rewards="group", beta=BETA, epsilon=EPSILON, num_iterations=1,
                  num_generations=K, per_device_train_batch_size=K * len(groups), gradient_accumulation_steps=1,
                  use_bias_correction_kl=False, temperature=1.0, gradient_checkpointing=False, bf16=False,
                  use_cpu=True, report_to="none", shuffle_dataset=False, disable_tqdm=True, save_strategy="no")
    values.update(config)
    args = GRPOConfig(output_dir=str(tmp_path / "trl"), **values)
    dataset = Dataset.from_dict({"prompt": [str(i) for i in range(len(groups))]})
    trainer = GRPOTrainer(model=model, reward_funcs=beam_reward, args=args, train_dataset=dataset,
                          processing_class=tokenizer, rollout_func=serve(groups))
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # what train() sets for a step without accumulation
    batch = trainer._generate_and_score_completions([{"prompt": str(i)} for i in range(len(groups)) for _ in range(K)])
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    return float(loss.detach()), {n: p.grad.clone() for n, p in trainer.model.named_parameters()}, batch


def our_loss_and_grads(world):
    """Our trainer's update at learning rate 0: (loss, gradients by name, statistics)."""
    policy, reference, _, tokenizer, groups, settings = world
    model = copy.deepcopy(policy)
    optimizer, scheduler = common.optimizer_and_schedule(model, 0.0, 0.0, 1)
    stats = rlt.policy_update(model, reference, groups, settings, optimizer, scheduler, tokenizer.pad_token_id,
                              common.Dist())
    return stats["loss"], {n: p.grad.clone() for n, p in model.named_parameters()}, stats


@pytest.fixture(scope="module")
def ours(world):
    return our_loss_and_grads(world)


def assert_same_gradients(left, right):
    assert left.keys() == right.keys()
    for name in left:
        torch.testing.assert_close(left[name], right[name], rtol=1e-5, atol=1e-7)


def test_our_update_equals_trl_grpo_loss(world, ours, tmp_path):
    _, _, _, _, groups, _ = world
    loss, grads, stats = ours
    trl_loss, trl_grads, batch = trl_loss_and_grads(world, tmp_path)
    # the batch is not trivial: rewards vary within groups, lengths differ, the reference differs
    assert sum(len(set(g.rewards)) > 1 for g in groups) >= 4
    assert {len(c) for g in groups for c in g.completions} == {3, 4}
    assert stats["kl"] > 1e-3
    assert trl_loss == pytest.approx(loss, rel=1e-5, abs=1e-7)
    assert_same_gradients(grads, trl_grads)
    assert max(float(g.abs().max()) for g in grads.values()) > 1e-3
    # trl's advantages are ours (float32 rewards there)
    expected = torch.cat([group_advantages(g.rewards) for g in groups]).float()
    torch.testing.assert_close(batch["advantages"], expected, rtol=1e-5, atol=1e-6)


def per_sequence_terms(world):
    """Our per-token pieces on the whole batch, with gradients: (logp, ref logp, mask, advantages)."""
    policy, reference, _, tokenizer, groups, _ = world
    model = copy.deepcopy(policy)
    prompts = [g.prompt_ids for g in groups for _ in g.completions]
    completions = [c for g in groups for c in g.completions]
    out = completion_logprobs(model, prompts, completions, tokenizer.pad_token_id)
    with torch.no_grad():
        ref = completion_logprobs(reference, prompts, completions, tokenizer.pad_token_id).logp
    advantages = torch.cat([group_advantages(g.rewards) for g in groups]).float()
    return model, out.logp, ref, out.mask, advantages


def test_trl_default_kl_correction_keeps_the_loss_and_adds_a_gradient_term(world, ours, tmp_path):
    """trl's default ``use_bias_correction_kl=True`` multiplies the k3 KL by π_θ/π_old (= 1 here):
    the same loss, and the gradient gains β · mean_i (1/|y_i|) Σ_t KL_it ∇log π_θ(y_it)."""
    loss, grads, _ = ours
    trl_loss, trl_grads, _ = trl_loss_and_grads(world, tmp_path, use_bias_correction_kl=True)
    assert trl_loss == pytest.approx(loss, rel=1e-5, abs=1e-7)
    model, logp, ref, mask, _ = per_sequence_terms(world)
    m = mask.float()
    extra = BETA * ((k3_kl(logp, ref).detach() * logp * m).sum(1) / m.sum(1)).mean()
    extra.backward()
    expected = {n: grads[n] + p.grad for n, p in model.named_parameters()}
    assert_same_gradients(trl_grads, expected)
    assert max(float((trl_grads[n] - grads[n]).abs().max()) for n in grads) > 1e-4  # the term is not negligible


@pytest.mark.parametrize("loss_type", ["bnpo", "dapo", "dr_grpo"])
def test_token_normalised_loss_types_weight_our_sequence_losses_by_length(world, tmp_path, loss_type):
    """trl's other normalisations are a reweighting of our per-sequence losses g_i (token means):
    bnpo and dapo (one process, one micro-batch) Σ |y_i| g_i / Σ |y_i|; dr_grpo Σ |y_i| g_i / (N · max_completion_length)."""
    trl_loss, _, _ = trl_loss_and_grads(world, tmp_path, loss_type=loss_type, max_completion_length=16)
    _, logp, ref, mask, advantages = per_sequence_terms(world)
    per_sequence = torch.stack([
        grpo_loss(logp[i : i + 1], logp[i : i + 1].detach(), ref[i : i + 1], advantages[i : i + 1], mask[i : i + 1],
                  clip_eps=EPSILON, beta=BETA).loss.detach()
        for i in range(len(logp))
    ])
    lengths = mask.sum(1).double()
    divisor = lengths.sum() if loss_type != "dr_grpo" else len(logp) * 16
    expected = float((lengths * per_sequence.double()).sum() / divisor)
    assert trl_loss == pytest.approx(expected, rel=1e-5, abs=1e-7)
    assert abs(expected - float(per_sequence.double().mean())) > 1e-4  # differs from ours on this batch
