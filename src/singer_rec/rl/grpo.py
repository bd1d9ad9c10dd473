"""GRPO pieces (paper Eq. 1-2): group advantages, the k3 KL estimator, the clipped loss, and the
per-token log-probabilities of completions under a causal LM.

Loss averaging (the paper's Eq. 2): the per-token objective is averaged over the valid tokens of
each sequence (1/|y|), then over sequences. With gradient accumulation every micro-batch divides
its sum over sequences by the number of sequences in the *whole* optimiser batch, so the
accumulated gradient equals the gradient of the full-batch mean.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


def group_advantages(rewards: Sequence[float] | torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Eq. 1: (R - mean) / (std + eps) within one group.

    std is the unbiased sample standard deviation (as TRL's GRPO, which MiniOneRec builds on);
    a group of one sample, or with equal rewards, gets zero advantages.
    """
    r = torch.as_tensor(rewards, dtype=torch.float64)
    if r.numel() < 2:
        return torch.zeros_like(r)
    return (r - r.mean()) / (r.std(unbiased=True) + eps)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL[π_θ || π_ref]: exp(ref - logp) - (ref - logp) - 1 (>= 0; 0 iff equal)."""
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1.0


@dataclass
class LossParts:
    loss: torch.Tensor           # to backpropagate
    kl: float                    # mean per-sequence token-mean k3 KL
    clip_fraction: float         # fraction of valid tokens whose ratio left [1-ε, 1+ε]
    surrogate: float             # mean clipped surrogate (before the KL term)
    num_tokens: int


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = 0.2,
    beta: float = 0.1,
    num_sequences: int | None = None,
) -> LossParts:
    """Negative Eq. 2 for a batch of completions.

    logp, old_logp, ref_logp, mask: ``[N, T]`` per-token log-probs of the sampled tokens under the
    policy being trained, the rollout policy and the frozen reference; mask marks real tokens.
    advantages: ``[N]`` (one per sequence, shared by its tokens). ``num_sequences``: the divisor
    over sequences (defaults to N; pass the full batch size under gradient accumulation).
    """
    mask = mask.to(logp.dtype)
    adv = advantages.to(logp.dtype).unsqueeze(1)
    ratio = torch.exp(logp - old_logp.detach())
    surrogate = torch.minimum(ratio * adv, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv)
    if ref_logp is not None and beta != 0.0:
        kl = k3_kl(logp, ref_logp.detach())
    else:
        kl = torch.zeros_like(logp)
    per_token = surrogate - beta * kl
    lengths = mask.sum(dim=1).clamp(min=1.0)
    per_sequence = (per_token * mask).sum(dim=1) / lengths
    divisor = float(num_sequences if num_sequences is not None else logp.shape[0])
    loss = -per_sequence.sum() / divisor
    with torch.no_grad():
        clipped = ((ratio - 1.0).abs() > clip_eps).to(logp.dtype) * mask
        return LossParts(
            loss=loss,
            kl=float(((kl * mask).sum(dim=1) / lengths).mean()),
            clip_fraction=float(clipped.sum() / mask.sum().clamp(min=1.0)),
            surrogate=float(((surrogate * mask).sum(dim=1) / lengths).mean()),
            num_tokens=int(mask.sum()),
        )


@dataclass
class TokenLogprobs:
    logp: torch.Tensor     # [N, T] log-prob of each completion token (0 at padding)
    mask: torch.Tensor     # [N, T] bool, True at real completion tokens
    entropy: torch.Tensor  # [N, T] entropy of the next-token distribution at each completion token


def completion_logprobs(
    model,
    prompts: Sequence[Sequence[int]],
    completions: Sequence[Sequence[int]],
    pad_token_id: int = 0,
    with_entropy: bool = False,
) -> TokenLogprobs:
    """Log-probs of ``completions[i]`` following ``prompts[i]`` under a causal LM, over the full vocabulary.

    A group's k completions share one prompt, so each distinct prompt is encoded once (left-padded,
    with its key/value cache) and the completions continue from copies of that cache; gradients
    flow back through the shared prompt. This is exact, and k times cheaper than re-encoding the
    prompt per completion (prompts are ~100 tokens, SID completions 3-4). The prompt of a guided
    hard sample includes its SID prefix, so only the tokens generated after the guide are scored.
    Under gradient checkpointing (training mode, gradients on) the decoder layers keep no cache, so
    each prompt + completion is encoded whole instead: the same log-probs, at k times the prompt cost.
    """
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    if any(len(c) == 0 for c in completions) or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt and every completion needs at least one token")
    device = next(model.parameters()).device
    comp_width = max(len(c) for c in completions)
    targets = torch.zeros((len(completions), comp_width), dtype=torch.long)
    mask = torch.zeros((len(completions), comp_width), dtype=torch.bool)
    for r, c in enumerate(completions):
        targets[r, : len(c)] = torch.tensor(list(c), dtype=torch.long)
        mask[r, : len(c)] = True
    targets, mask = targets.to(device), mask.to(device)
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    if getattr(model, "is_activation_checkpointing", False) and model.training and torch.is_grad_enabled():
        # checkpointed layers drop the key/value cache (a recompute would write it twice)
        states = _whole_sequence_states(decoder, prompts, targets, mask, pad_token_id)
    else:
        states = _shared_prompt_states(decoder, model.config, prompts, targets, mask, pad_token_id)
    # the output projection runs only on real completion tokens (packed): no logits for padding,
    # and no [N, T, V] log-softmax kept for the backward pass
    states = states[mask]
    logits = head(states).float()
    norm = torch.logsumexp(logits, dim=-1)
    packed = logits.gather(1, targets[mask][:, None]).squeeze(1) - norm
    token_logp = torch.zeros(mask.shape, dtype=packed.dtype, device=device).masked_scatter(mask, packed)
    entropy = torch.zeros_like(token_logp)
    if with_entropy:
        with torch.no_grad():  # H = logsumexp(z) - sum softmax(z) * z
            probs = torch.softmax(logits, dim=-1)
            entropy = entropy.masked_scatter(mask, norm - (probs * logits).sum(-1))
    return TokenLogprobs(logp=token_logp, mask=mask, entropy=entropy)


def _shared_prompt_states(decoder, config, prompts, targets: torch.Tensor, mask: torch.Tensor,
                          pad_token_id: int) -> torch.Tensor:
    """[N, T, H] hidden states predicting each completion token: each distinct prompt encoded once, the
    completions fed after per-row copies of its key/value cache."""
    from transformers import DynamicCache

    device = targets.device
    unique: dict[tuple[int, ...], int] = {}
    rows = torch.tensor([unique.setdefault(tuple(p), len(unique)) for p in prompts], dtype=torch.long, device=device)
    distinct = list(unique)
    width = max(len(p) for p in distinct)
    prompt_ids = torch.full((len(distinct), width), pad_token_id, dtype=torch.long)
    prompt_mask = torch.zeros((len(distinct), width), dtype=torch.long)
    for i, p in enumerate(distinct):  # left padding: every prompt ends in the last column
        prompt_ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        prompt_mask[i, width - len(p):] = 1
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=config)
    hidden = decoder(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=positions, cache=cache,
                     use_cache=True).last_hidden_state
    predicting = [hidden[rows, -1:]]  # the prompt's last state predicts completion token 0
    comp_width = targets.shape[1]
    if comp_width > 1:  # feed completion tokens 0..n-2 after a per-row copy of the prompt cache
        for layer in cache.layers:
            layer.keys, layer.values = layer.keys[rows], layer.values[rows]
        feed_mask = mask[:, :-1].long()
        start = prompt_mask.sum(-1)[rows]
        feed_positions = start[:, None] + torch.arange(comp_width - 1, device=device)[None, :]
        out = decoder(input_ids=targets[:, :-1], attention_mask=torch.cat([prompt_mask[rows], feed_mask], dim=1),
                      position_ids=feed_positions, cache=cache, use_cache=True).last_hidden_state
        predicting.append(out)
    return torch.cat(predicting, dim=1)


def _whole_sequence_states(decoder, prompts, targets: torch.Tensor, mask: torch.Tensor,
                           pad_token_id: int) -> torch.Tensor:
    """[N, T, H] hidden states predicting each completion token, each prompt + completion encoded on its
    own (right-padded, no cache): what gradient checkpointing can recompute."""
    device, lengths = targets.device, mask.sum(1).tolist()
    sequences = [list(p) + targets[r, : lengths[r] - 1].tolist() for r, p in enumerate(prompts)]
    width = max(len(x) for x in sequences)
    ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    for r, x in enumerate(sequences):
        ids[r, : len(x)] = torch.tensor(x, dtype=torch.long)
        attention[r, : len(x)] = 1
    hidden = decoder(input_ids=ids.to(device), attention_mask=attention.to(device), use_cache=False).last_hidden_state
    # completion token j is predicted at the prompt's last position + j (padding slots: any valid index)
    start = torch.tensor([len(p) - 1 for p in prompts], dtype=torch.long, device=device)
    index = (start[:, None] + torch.arange(targets.shape[1], device=device)[None, :]).clamp(max=width - 1)
    return hidden.gather(1, index[:, :, None].expand(-1, -1, hidden.shape[-1]))
