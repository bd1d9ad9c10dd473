"""The RL loop on in-memory models: epochs of seeded batches, rollouts, updates, checkpoints and resume."""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from singer_rec import tracking
from singer_rec.training import common
from singer_rec.training.rl.examples import Dictionary, Example
from singer_rec.training.rl.rollouts import rollout, rollout_stats
from singer_rec.training.rl.settings import RLSettings
from singer_rec.training.rl.timing import PhaseTimer
from singer_rec.training.rl.update import policy_update

logger = logging.getLogger(__name__)

def epoch_order(num_examples: int, epoch: int, seed: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed + 1000 * epoch)
    return torch.randperm(num_examples, generator=generator).tolist()


def train_grpo(
    policy,
    reference,
    tokenizer,
    examples: Sequence[Example],
    sid_dict: Dictionary,
    title_dict: Dictionary | None,
    settings: RLSettings,
    checkpoint_dir: Path | None = None,
    progress: bool = True,
    dist: common.Dist | None = None,
    keep_checkpoints: int = 2,
) -> dict[str, Any]:
    """The RL loop on in-memory models; returns the per-step history and before/after probe rewards."""
    from tqdm.auto import tqdm

    dist = dist or common.Dist()
    rank, world = dist.rank, dist.world_size
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    steps_per_epoch = math.ceil(len(examples) / settings.batch_size)
    total_steps = settings.epochs * steps_per_epoch
    if settings.max_steps is not None:
        total_steps = min(total_steps, settings.max_steps)
    total_updates = total_steps * settings.num_iterations
    if reference is not None:
        reference.eval().requires_grad_(False)
    policy.eval()
    optimizer, scheduler = common.optimizer_and_schedule(
        policy, settings.learning_rate, settings.weight_decay, total_updates, int(total_updates * settings.warmup_ratio)
    )
    # a fixed, seeded sample of the prompts (every task), rolled out unguided before and after RL
    probe = [examples[i] for i in sorted(epoch_order(len(examples), -1, settings.seed)[: settings.probe_prompts])]

    def probe_rewards() -> tuple[list[float], float]:
        with torch.no_grad():
            groups = rollout(policy, probe, sid_dict, title_dict, settings, total_steps, total_steps, pad_id,
                             torch.Generator().manual_seed(settings.seed), guide=False)
        return [r for g in groups for r in g.rewards], sum(g.hit for g in groups) / max(1, len(groups))

    start_step = 0
    before = None
    history: list[dict[str, float]] = []
    if checkpoint_dir is not None and (found := common.latest_checkpoint(checkpoint_dir)) is not None:
        restored = common.load_checkpoint(found, policy, optimizer, scheduler)
        start_step, before, history = restored["step"], restored["trainer"]["probe_before"], restored["trainer"]["history"]
        logger.info("resumed RL from %s (step %d of %d)", found, start_step, total_steps)
    if before is None:
        rewards_before, hit_before = probe_rewards()
        before = {"rewards": rewards_before, "hit_rate": hit_before}

    bar = tqdm(total=total_steps, initial=start_step, desc="rl", disable=not progress or rank != 0)
    for step in range(start_step + 1, total_steps + 1):
        started = time.perf_counter()
        epoch, position = divmod(step - 1, steps_per_epoch)
        order = epoch_order(len(examples), epoch, settings.seed)
        batch_ids = order[position * settings.batch_size : (position + 1) * settings.batch_size]
        batch = [examples[i] for i in batch_ids[rank::world]]
        torch.manual_seed(settings.seed + step)
        generator = torch.Generator().manual_seed(settings.seed * 7919 + step * world + rank)
        timer = PhaseTimer()
        with torch.no_grad():
            groups = rollout(policy, batch, sid_dict, title_dict, settings, step, total_steps, pad_id, generator,
                             timer=timer)
        rollout_seconds = time.perf_counter() - started
        learning_rate = scheduler.get_last_lr()[0]
        update_stats = policy_update(policy, reference, groups, settings, optimizer, scheduler, pad_id, dist, timer)
        local = rollout_stats(groups)
        stats = dict(zip(local, dist.all_reduce_sum(list(local.values()))))
        record = {
            "mean_reward": stats["reward_sum"] / max(stats["rewards"], 1),
            "hit_rate": stats["hits"] / max(stats["prompts"], 1),
            "hard_fraction": stats["hard"] / max(stats["prompts"], 1),
            "guide_length": stats["guide_sum"] / max(stats["hard"], 1),
            "kl": update_stats["kl"],
            "entropy": update_stats["entropy"],
            "clip_fraction": update_stats["clip_fraction"],
            "loss": update_stats["loss"],
            "learning_rate": learning_rate,
            "seconds_per_step": time.perf_counter() - started,
            "rollout_seconds": rollout_seconds,
            **timer.record(),
        }
        history.append({"step": step, **record})
        if rank == 0:
            with timer("logging"):
                tracking.log_metrics({f"rl.{k}": v for k, v in record.items()}, step=step)
                bar.update(1)
                bar.set_postfix(hit=f"{record['hit_rate']:.2f}", hard=f"{record['hard_fraction']:.2f}",
                                r=f"{record['mean_reward']:.2f}")
        if checkpoint_dir is not None and settings.checkpoint_every and step % settings.checkpoint_every == 0 and step < total_steps and rank == 0:
            with timer("checkpoint"):
                common.save_checkpoint(checkpoint_dir, step, policy, optimizer, scheduler,
                                       {"probe_before": before, "history": history}, keep=keep_checkpoints)
        # measured after the record was logged: kept in the history only (a checkpoint holds the step before it)
        history[-1].update({f"time_{name}": timer.seconds[name] for name in ("logging", "checkpoint") if name in timer.seconds})
        dist.barrier()
    bar.close()
    rewards_after, hit_after = probe_rewards()
    return {
        "history": history,
        "total_steps": total_steps,
        "start_step": start_step,
        "resumed_history": start_step > 0,
        "probe": {"before": before, "after": {"rewards": rewards_after, "hit_rate": hit_after}},
    }
