"""The RL loop on in-memory models: epochs of seeded batches, rollouts, updates, checkpoints and resume."""
from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from singer_rec import tracking
from singer_rec.training import checkpoints, common
from singer_rec.training.rl.examples import Dictionary, Example
from singer_rec.training.rl.rollouts import rollout, rollout_stats
from singer_rec.training.rl.settings import RLSettings
from singer_rec.training.rl.timing import PhaseTimer
from singer_rec.training.rl.update import policy_update
from singer_rec.training.validation import BestModelSelector

logger = logging.getLogger(__name__)

class ValidSelection:
    """The RL run's valid curve (HR/NDCG@K of a ``RankingValidation`` at chosen steps) and, with
    ``select: valid``, the weights of its best NDCG@10 (a ``BestModelSelector`` without early stopping),
    kept in memory and in ``checkpoint_dir/best_valid`` so that a resumed run selects among every point
    of the curve."""

    def __init__(self, validation, settings: RLSettings, checkpoint_dir: Path | None, dist: common.Dist):
        self.validation, self.settings, self.dist = validation, settings, dist
        self.best_file = None if checkpoint_dir is None else Path(checkpoint_dir) / "best_valid" / "model.safetensors"
        self.curve: list[dict[str, float]] = []
        self.selector = BestModelSelector("NDCG@10")  # a tie keeps the earlier step
        self.best_weights: dict[str, torch.Tensor] | None = None

    @property
    def best_step(self) -> int | None:
        return self.selector.best_step

    def due(self, step: int, total_steps: int) -> bool:
        every = self.settings.valid_every
        return self.validation is not None and every > 0 and (step % every == 0 or step == total_steps)

    def evaluate(self, policy, step: int, train_seconds: float) -> None:
        if self.validation is None or self.settings.valid_every == 0:
            return
        started = time.perf_counter()
        ranked = self.validation.evaluate(policy, self.dist, self.settings.rollout_batch_size, None)
        policy.eval()  # the ranking leaves the model in train mode; rollouts run without dropout
        point = {"step": step, "train_seconds": round(train_seconds, 3),
                 "valid_seconds": round(time.perf_counter() - started, 3), **ranked}
        self.curve.append(point)
        better = self.selector.update(step, ranked["NDCG@10"])
        if better:
            if self.settings.select == "valid":
                module = getattr(policy, "module", policy)
                self.best_weights = {k: v.detach().clone() for k, v in module.state_dict().items()}
                self._write_best(module)
        if self.dist.is_main:
            logger.info("RL step %d: valid HR@10 %.4f, NDCG@10 %.4f%s", step, ranked["HR@10"], ranked["NDCG@10"],
                        " (best)" if better else "")
            tracking.log_metrics({f"rl.valid_{k.replace('@', '_at_')}": v for k, v in ranked.items()}, step=step)

    def _write_best(self, module) -> None:
        if self.best_file is None or not self.dist.is_main:
            return
        from safetensors.torch import save_model

        self.best_file.parent.mkdir(parents=True, exist_ok=True)
        partial = self.best_file.with_suffix(".partial")
        save_model(module, str(partial))
        os.replace(partial, self.best_file)  # a checkpoint never names a half-written best

    def state(self) -> dict[str, Any]:
        return {"valid_curve": self.curve, "selected_step": self.best_step if self.settings.select == "valid" else None}

    def restore(self, trainer_state: Mapping[str, Any]) -> None:
        self.curve = list(trainer_state.get("valid_curve") or [])
        for point in self.curve:  # the checkpoint holds the curve: its best is found again
            self.selector.update(point["step"], point["NDCG@10"])
        if self.settings.select == "valid" and self.best_step is not None and (
                self.best_file is None or not self.best_file.is_file()):
            raise FileNotFoundError(f"resuming RL with select: valid: the best valid weights (step {self.best_step}) "
                                    f"are missing from {self.best_file}")

    def load_selected(self, policy, total_steps: int) -> None:
        if self.settings.select != "valid" or self.best_step is None or self.best_step == total_steps:
            return
        module = getattr(policy, "module", policy)
        if self.best_weights is not None:
            module.load_state_dict(self.best_weights)
        else:  # resumed: the best was written before the interruption
            from safetensors.torch import load_model

            load_model(module, str(self.best_file), device=str(next(module.parameters()).device))
        logger.info("RL: the model of step %d is kept (best valid NDCG@10 %.4f of %d points)",
                    self.best_step, self.selector.best_metric, len(self.curve))


def prompt_order(num_examples: int, epoch: int, seed: int) -> list[int]:
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
    validation=None,
) -> dict[str, Any]:
    """The RL loop on in-memory models; returns the per-step history and before/after probe rewards.

    ``validation`` (a ``training.validation.RankingValidation``) ranks valid before step 1, every
    ``settings.valid_every`` steps and after the last; with ``settings.select == "valid"`` the policy
    ends with the weights of the best valid NDCG@10 among those points (step 0: the start model).
    """
    from tqdm.auto import tqdm

    clock = common.WallClock()  # the result's wall_seconds: every attempt's, when resumed
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
    probe = [examples[i] for i in sorted(prompt_order(len(examples), -1, settings.seed)[: settings.probe_prompts])]

    def probe_rewards() -> tuple[list[float], float]:
        """Each rank rolls out its share of the probe; the groups' rewards and hits are gathered in
        probe order, so the result is one process's (for the beam samplers, which draw nothing)."""
        mine = [probe[i] for i in dist.shard(len(probe))]
        with torch.no_grad():
            groups = rollout(policy, mine, sid_dict, title_dict, settings, total_steps, total_steps, pad_id,
                             torch.Generator().manual_seed(settings.seed), guide=False) if mine else []
        rows = dist.gather_shards(len(probe), [(list(g.rewards), bool(g.hit)) for g in groups])
        return [r for rewards, _ in rows for r in rewards], sum(hit for _, hit in rows) / max(1, len(rows))

    start_step = 0
    before = None
    history: list[dict[str, float]] = []
    valid = ValidSelection(validation, settings, checkpoint_dir, dist)
    if checkpoint_dir is not None and (found := common.latest_checkpoint(checkpoint_dir)) is not None:
        restored = common.load_checkpoint(found, policy, optimizer, scheduler, rank=rank)
        start_step, before, history = restored["step"], restored["trainer"]["probe_before"], restored["trainer"]["history"]
        clock.before = float(restored["trainer"].get("wall_seconds", 0.0))
        valid.restore(restored["trainer"])
        logger.info("resumed RL from %s (step %d of %d)", found, start_step, total_steps)
    if before is None:
        rewards_before, hit_before = probe_rewards()
        before = {"rewards": rewards_before, "hit_rate": hit_before}
    if start_step == 0:
        valid.evaluate(policy, 0, 0.0)

    bar = tqdm(total=total_steps, initial=start_step, desc="rl", disable=not progress or rank != 0)
    for step in range(start_step + 1, total_steps + 1):
        started = time.perf_counter()
        epoch, position = divmod(step - 1, steps_per_epoch)
        order = prompt_order(len(examples), epoch, settings.seed)
        batch_ids = order[position * settings.batch_size : (position + 1) * settings.batch_size]
        batch = [examples[i] for i in batch_ids[rank::world]]
        torch.manual_seed(common.rank_seed(settings.seed + step, rank))  # dropout: each rank its own masks
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
            "zero_advantage_fraction": stats["zero_advantage"] / max(stats["prompts"], 1),
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
        if valid.due(step, total_steps):
            valid.evaluate(policy, step, sum(r["seconds_per_step"] for r in history))
        if checkpoint_dir is not None and settings.checkpoint_every and step % settings.checkpoint_every == 0 and step < total_steps:
            with timer("checkpoint"):
                checkpoints.save_checkpoint(dist, checkpoint_dir, step, policy, optimizer, scheduler,
                                            {"probe_before": before, "history": history, **valid.state(),
                                             "wall_seconds": clock.total()}, keep_checkpoints)
        # measured after the record was logged: kept in the history only (a checkpoint holds the step before it)
        history[-1].update({f"time_{name}": timer.seconds[name] for name in ("logging", "checkpoint") if name in timer.seconds})
        dist.barrier()
    bar.close()
    valid.load_selected(policy, total_steps)
    rewards_after, hit_after = probe_rewards()
    wall_seconds, attempt_wall_seconds = clock.split()
    return {
        "history": history,
        **valid.state(),
        "total_steps": total_steps,
        "start_step": start_step,
        "resumed_history": start_step > 0,
        "wall_seconds": wall_seconds,  # every attempt's, when resumed
        "attempt_wall_seconds": attempt_wall_seconds,
        "wall_seconds_before": clock.before,
        "probe": {"before": before, "after": {"rewards": rewards_after, "hit_rate": hit_after}},
    }
