import math

import pytest
import torch

from singer_rec.rl.grpo import completion_logprobs, group_advantages, grpo_loss, k3_kl


def test_group_advantages_by_hand():
    adv = group_advantages([1.0, 0.0, 0.0, 0.0], eps=0.0)
    # mean 0.25, unbiased std sqrt(0.75/3)=0.5
    assert adv.tolist() == pytest.approx([1.5, -0.5, -0.5, -0.5])
    assert group_advantages([0.3, 0.3, 0.3]).tolist() == [0.0, 0.0, 0.0]
    assert group_advantages([2.0]).tolist() == [0.0]
    assert group_advantages([0.0, 1.0], eps=1e-4).tolist() == pytest.approx([-0.5 / (math.sqrt(0.5) + 1e-4), 0.5 / (math.sqrt(0.5) + 1e-4)])


def test_kl_zero_when_policy_equals_reference():
    logp = torch.log(torch.tensor([[0.2, 0.5, 0.9]]))
    assert k3_kl(logp, logp).tolist() == [[0.0, 0.0, 0.0]]
    parts = grpo_loss(logp, logp, logp, torch.tensor([1.0]), torch.ones(1, 3, dtype=torch.bool), beta=0.1)
    assert parts.kl == 0.0
    # k3 by hand: ref/pi = 2 -> 2 - ln 2 - 1
    assert float(k3_kl(torch.log(torch.tensor(0.25)), torch.log(torch.tensor(0.5)))) == pytest.approx(1 - math.log(2))


def test_clipped_loss_against_hand_computation():
    old = torch.log(torch.tensor([[0.5, 0.5, 0.5], [0.4, 0.4, 1.0]]))
    new = torch.log(torch.tensor([[0.75, 0.5, 0.55], [0.2, 0.44, 1.0]]))  # ratios 1.5, 1, 1.1 | 0.5, 1.1, (pad)
    ref = old.clone()
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    adv = torch.tensor([2.0, -1.0])
    new.requires_grad_(True)
    parts = grpo_loss(new, old, ref, adv, mask, clip_eps=0.2, beta=0.1)
    # seq 1 (A=2): min(r A, clip(r) A) = min(3, 2.4)=2.4, 2, 2.2
    kl1 = [1 / 1.5 - math.log(1 / 1.5) - 1, 0.0, 1 / 1.1 - math.log(1 / 1.1) - 1]
    seq1 = (2.4 + 2.0 + 2.2 - 0.1 * sum(kl1)) / 3
    # seq 2 (A=-1): r=0.5 -> min(-0.5, -0.8) = -0.8; r=1.1 -> min(-1.1, -1.1) = -1.1; pad ignored
    kl2 = [2 - math.log(2) - 1, 1 / 1.1 - math.log(1 / 1.1) - 1]
    seq2 = (-0.8 - 1.1 - 0.1 * sum(kl2)) / 2
    assert float(parts.loss.detach()) == pytest.approx(-(seq1 + seq2) / 2, rel=1e-6)
    assert parts.clip_fraction == pytest.approx(2 / 5)  # 1.5 and 0.5 are outside [0.8, 1.2]
    assert parts.kl == pytest.approx((sum(kl1) / 3 + sum(kl2) / 2) / 2, rel=1e-6)
    assert parts.num_tokens == 5
    # gradient accumulation: dividing by the full batch of 4 sequences halves the loss
    half = grpo_loss(new, old, ref, adv, mask, clip_eps=0.2, beta=0.1, num_sequences=4)
    assert float(half.loss.detach()) == pytest.approx(float(parts.loss.detach()) / 2, rel=1e-6)
    parts.loss.backward()
    # a clipped token with positive advantage carries no surrogate gradient, only the KL's
    g = new.grad
    kl_grad_tok0 = 0.1 * (1 - 1 / 1.5) / 3 / 2  # d/dlogp of beta*k3 = beta*(1 - exp(ref-logp)), then means
    assert float(g[0, 0]) == pytest.approx(kl_grad_tok0, rel=1e-5)
    assert float(g[1, 2]) == 0.0


def test_completion_logprobs_match_unpadded_forward():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = Qwen2ForCausalLM(cfg).eval()
    prompts = [[3, 4, 5, 6], [7, 8]]
    completions = [[10, 11], [12, 13, 14]]
    out = completion_logprobs(model, prompts, completions, pad_token_id=0, with_entropy=True)
    assert out.mask.tolist() == [[True, True, False], [True, True, True]]
    with torch.no_grad():
        for row, (p, c) in enumerate(zip(prompts, completions)):
            logits = model(input_ids=torch.tensor([p + c])).logits[0].log_softmax(-1)
            expected = [float(logits[len(p) - 1 + j, tok]) for j, tok in enumerate(c)]
            assert out.logp[row, : len(c)].tolist() == pytest.approx(expected, abs=1e-5)
            positions = logits[len(p) - 1 : len(p) - 1 + len(c)]
            entropy = -(positions.exp() * positions).sum(-1)
            assert out.entropy[row, : len(c)].tolist() == pytest.approx(entropy.tolist(), abs=1e-5)
    assert float(out.logp[0, 2]) == 0.0 and float(out.entropy[0, 2]) == 0.0
    assert (out.entropy[out.mask] > 0).all()


def test_shared_prompt_logprobs_and_gradients_equal_separate_forwards():
    """Groups share their prompt's cache; log-probs and gradients equal one full forward per row."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(1)
    cfg = Qwen2Config(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = Qwen2ForCausalLM(cfg)
    prompts = [[3, 4, 5], [3, 4, 5], [6, 7, 8, 9, 10], [3, 4, 5]]
    completions = [[11, 12, 13], [11, 14], [15], [16, 12, 13]]
    weights = torch.tensor([[1.0, -2.0, 0.5], [0.3, 1.0, 0.0], [2.0, 0.0, 0.0], [-1.0, 0.7, 0.2]])
    out = completion_logprobs(model, prompts, completions)
    (out.logp * weights).sum().backward()
    shared_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    total = 0.0
    for row, (p, c) in enumerate(zip(prompts, completions)):
        logits = model(input_ids=torch.tensor([p + c])).logits[0].log_softmax(-1)
        expected = torch.stack([logits[len(p) - 1 + j, tok] for j, tok in enumerate(c)])
        torch.testing.assert_close(out.logp[row, : len(c)].detach(), expected.detach(), atol=1e-5, rtol=1e-5)
        total = total + (expected * weights[row, : len(c)]).sum()
    total.backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(shared_grads[name], param.grad, atol=1e-5, rtol=1e-4)
    assert out.mask.sum().item() == 9


def test_bucketed_gradient_all_reduce_keeps_every_gradient(tmp_path):
    """Gradients go through flat buckets and come back in place (one process: the sum is the identity)."""
    import torch.distributed as dist

    from singer_rec.training.rl import all_reduce_gradients

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    model[1].bias.requires_grad_(False)
    model(torch.ones(2, 3)).sum().backward()
    model[0].bias.grad = None  # a rank whose parameter got no gradient still joins with zeros
    expected = {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
                for n, p in model.named_parameters() if p.requires_grad}
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        assert all_reduce_gradients(model, bucket_elements=14) == 2  # 12 + 4 > 14: weight0 | bias0 + weight1
        assert all_reduce_gradients(model) == 1
    finally:
        dist.destroy_process_group()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert torch.equal(param.grad, expected[name])
    assert model[1].bias.grad is None
