"""The policy update: μ GRPO passes over a batch's groups, and the gradient sync between processes."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch

from singer_rec.rl.grpo import completion_logprobs, group_advantages, grpo_loss
from singer_rec.training import common
from singer_rec.training.rl.rollouts import Group, amp_dtype
from singer_rec.training.rl.settings import RLSettings
from singer_rec.training.rl.timing import NO_TIMER, PhaseTimer

def policy_update(
    policy, reference, groups: Sequence[Group], settings: RLSettings, optimizer, scheduler, pad_token_id: int,
    dist: common.Dist, timer: PhaseTimer = NO_TIMER,
) -> dict[str, float]:
    """μ passes of GRPO over the batch's sequences (gradient accumulation over micro-batches),
    one optimiser + scheduler step each."""
    sequences = []
    # groups sorted by completion length: a micro-batch of SID groups is not padded to a title's length
    # (a group stays together, so its prompt is still encoded once); only the summation order changes
    for group in sorted(groups, key=lambda g: max(map(len, g.completions), default=0)):
        advantages = group_advantages(group.rewards)
        for completion, advantage in zip(group.completions, advantages.tolist()):
            sequences.append((group.prompt_ids, completion, advantage))
    total_sequences = dist.all_reduce_sum([float(len(sequences))])[0]
    micro = [sequences[i : i + settings.micro_batch_size] for i in range(0, len(sequences), settings.micro_batch_size)]
    device = next(policy.parameters()).device
    amp = amp_dtype(policy, settings)
    old_logps, ref_logps = [], []
    with torch.no_grad(), timer("logp_old_ref"), common.autocast(device, amp):
        for chunk in micro:
            prompts, completions = [s[0] for s in chunk], [s[1] for s in chunk]
            old_logps.append(completion_logprobs(policy, prompts, completions, pad_token_id).logp if settings.num_iterations > 1 else None)
            ref_logps.append(completion_logprobs(reference, prompts, completions, pad_token_id).logp if reference is not None and settings.beta > 0 else None)
    totals = defaultdict(float)
    # with dropout on, the policy's log-probs differ from the reference's even where the weights are
    # equal, and the KL term trains dropout invariance (trl's GRPOConfig.disable_dropout)
    policy.train(not settings.disable_dropout)
    for inner in range(settings.num_iterations):
        optimizer.zero_grad(set_to_none=True)
        for chunk, old, ref in zip(micro, old_logps, ref_logps):
            prompts, completions = [s[0] for s in chunk], [s[1] for s in chunk]
            advantages = torch.tensor([s[2] for s in chunk], dtype=torch.float32, device=device)
            with timer("policy_forward"), common.autocast(device, amp):
                out = completion_logprobs(policy, prompts, completions, pad_token_id, with_entropy=inner == 0)
                parts = grpo_loss(
                    out.logp, out.logp.detach() if old is None else old, ref, advantages, out.mask,
                    clip_eps=settings.epsilon, beta=settings.beta, num_sequences=int(total_sequences),
                )
            with timer("backward"):
                parts.loss.backward()
            if inner == settings.num_iterations - 1:
                n = len(chunk)
                totals["kl"] += parts.kl * n
                totals["clip_fraction"] += parts.clip_fraction * parts.num_tokens
                totals["tokens"] += parts.num_tokens
                totals["loss"] += float(parts.loss.detach())
            if inner == 0:
                lengths = out.mask.sum(1).clamp(min=1)
                totals["entropy"] += float(((out.entropy.sum(1)) / lengths).sum())
        if dist.enabled:  # each rank divided by the global sequence count: summing gives the batch mean
            with timer("grad_sync"):
                all_reduce_gradients(policy)
        with timer("optimizer"):
            if settings.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(policy.parameters(), settings.max_grad_norm)
            optimizer.step()
            scheduler.step()
    policy.eval()
    kl, clip, tokens, loss, entropy = dist.all_reduce_sum(
        [totals["kl"], totals["clip_fraction"], totals["tokens"], totals["loss"], totals["entropy"]]
    )
    return {
        "kl": kl / max(total_sequences, 1),
        "clip_fraction": clip / max(tokens, 1),
        "entropy": entropy / max(total_sequences, 1),
        "loss": loss,
        "sequences": total_sequences,
    }


GRAD_BUCKET_ELEMENTS = 1 << 23  # 32 MB of float32 gradients per all-reduce


def all_reduce_gradients(model, bucket_elements: int = GRAD_BUCKET_ELEMENTS) -> int:
    """Sum the trainable parameters' gradients over the processes in a few flat buckets (one
    all-reduce per bucket, as DDP does, instead of one per tensor); returns the number of all-reduces.

    Every rank walks the same parameters in the same order, and a rank without sequences contributes
    zeros, so the buckets line up. Element-wise sums, so the result equals per-tensor all-reduces.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    buckets: list[list[torch.nn.Parameter]] = [[]]
    size = 0
    for p in params:
        if buckets[-1] and (size + p.numel() > bucket_elements or buckets[-1][-1].dtype != p.dtype):
            buckets.append([])
            size = 0
        buckets[-1].append(p)
        size += p.numel()
    for bucket in buckets:
        flat = torch.cat([p.grad.reshape(-1) for p in bucket])
        torch.distributed.all_reduce(flat)
        offset = 0
        for p in bucket:
            p.grad.copy_(flat[offset : offset + p.numel()].view_as(p.grad))
            offset += p.numel()
    return len(buckets)
