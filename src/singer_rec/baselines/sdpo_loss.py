"""Softmax DPO (S-DPO) for recommendation: one preferred answer against several dispreferred ones.

With Δ(y) = log π(y|x) − log π_ref(y|x) (the implicit reward, up to β), the loss of a prompt with
positive y_w and negatives y_1..y_n is

    L = −log σ( −log Σ_j exp( β·[Δ(y_j) − Δ(y_w)] ) )

With one negative it is the DPO sigmoid loss −log σ(β·(Δ(y_w) − Δ(y_l))). Computed here as
softplus(logsumexp_j β·[Δ(y_j) − Δ(y_w)]), which is the same value and stays finite for large
margins. Framework-free: tensors in, tensors out; no model, tokenizer or trainer.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SDPOLoss:
    losses: torch.Tensor           # [B] per-prompt loss (mean it, or weight it, to backpropagate)
    chosen_rewards: torch.Tensor   # [B] β·Δ(y_w), detached
    rejected_rewards: torch.Tensor  # [B, n] β·Δ(y_j), detached

    @property
    def accuracy(self) -> float:
        """Share of prompts whose positive has a higher implicit reward than every negative."""
        return float((self.chosen_rewards[:, None] > self.rejected_rewards).all(dim=1).float().mean())

    @property
    def margin(self) -> float:
        """Mean over prompts of β·Δ(y_w) minus the mean of β·Δ(y_j) over the negatives."""
        return float((self.chosen_rewards - self.rejected_rewards.mean(dim=1)).mean())


def sdpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
              ref_rejected: torch.Tensor, beta: float) -> SDPOLoss:
    """S-DPO loss per prompt.

    ``policy_chosen``/``ref_chosen``: ``[B]`` answer log-probs of the positive under the policy and
    the frozen reference; ``policy_rejected``/``ref_rejected``: ``[B, n]`` those of the n negatives.
    """
    if policy_rejected.dim() != 2 or policy_chosen.shape != policy_rejected.shape[:1]:
        raise ValueError(f"expected chosen [B] and rejected [B, n] log-probs, got {tuple(policy_chosen.shape)} and "
                         f"{tuple(policy_rejected.shape)}")
    if ref_chosen.shape != policy_chosen.shape or ref_rejected.shape != policy_rejected.shape:
        raise ValueError("reference log-probs must have the policy's shapes")
    if policy_rejected.shape[1] < 1:
        raise ValueError("S-DPO needs at least one negative per prompt")
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    chosen = beta * (policy_chosen - ref_chosen.detach())
    rejected = beta * (policy_rejected - ref_rejected.detach())
    losses = torch.nn.functional.softplus(torch.logsumexp(rejected - chosen[:, None], dim=1))
    return SDPOLoss(losses, chosen.detach(), rejected.detach())


def sample_negatives(num_items: int, positives: list[int], n: int, generator: torch.Generator) -> list[list[int]]:
    """For every positive item index, ``n`` distinct other item indices drawn uniformly at random."""
    if not 1 <= n < num_items:
        raise ValueError(f"need 1 <= negatives < items, got {n} negatives for {num_items} items")
    drawn = []
    for positive in positives:
        picked: list[int] = []
        while len(picked) < n:  # rejection keeps it uniform and O(n) per prompt on a large catalog
            j = int(torch.randint(num_items - 1, (1,), generator=generator))
            j += j >= positive  # [0, num_items - 1) onto the items other than the positive
            if j not in picked:
                picked.append(j)
        drawn.append(picked)
    return drawn
