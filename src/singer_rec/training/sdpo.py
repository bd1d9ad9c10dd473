"""S-DPO entry point: ``python -m singer_rec.training.sdpo --config FILE`` (or under torchrun).

Softmax DPO (``singer_rec.baselines.sdpo_loss``) on top of the SFT model. The preference data are the
semantic-task rows of the SFT train set: the prompt, its target item's SID as the preferred
answer, and ``num_negatives`` other items' SIDs, drawn uniformly at random per step (seeded), as
the dispreferred ones. An answer's log-prob is the sum of its SID tokens' log-probs, the score
constrained beam search ranks items by. The reference is a frozen copy of the SFT model.

One optimizer step: ``batch_size`` prompts, each scored with its 1 + n answers under the policy
and the reference (micro-batches of ``micro_batch_size`` prompts, gradient accumulation), the
mean S-DPO loss, AdamW + cosine. Dropout stays off (as trl's DPOTrainer by default), so policy
and reference agree exactly at step 0. Under torchrun each process scores its share of a step's
prompts (and of the valid ranking) and the gradients are summed over the processes
(``training.rl.update.all_reduce_gradients``, as RL does).

Model selection as in SFT: the valid ranking sample (``training.validation.RankingValidation``) is scored
before the first step (the SFT model itself) and at every epoch end / ``eval_every`` steps; the
best ``select_metric`` is kept, ``patience`` evaluations without a better one stop
(``BestModelSelector``). Checkpoints (``training.checkpoints``) every ``checkpoint_every`` steps
and at every evaluation; a rerun resumes.

Config: the process keys (model_path, train_path, valid_path, output_dir, checkpoint_dir,
result_path) plus the fields of :class:`SDPOSettings`.
"""
from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from singer_rec import modeling, tracking
from singer_rec.sid.tokens import sid_tokens
from singer_rec.params import from_params, rule
from singer_rec.prompts import render_for_model
from singer_rec.rl.grpo import completion_logprobs
from singer_rec.baselines.sdpo_loss import sample_negatives, sdpo_loss
from singer_rec.training import checkpoints, common
from singer_rec.training.rl.update import all_reduce_gradients
from singer_rec.metrics import SELECTION_METRICS
from singer_rec.training.validation import BestModelSelector, RankingValidation

logger = logging.getLogger(__name__)

PROCESS_KEYS = ("model_path", "train_path", "valid_path", "output_dir", "checkpoint_dir", "result_path")


@dataclass
class SDPOSettings:
    """The ``sdpo.train`` parameters (``parameters_sdpo.yml``); unknown keys are rejected.
    Defaults: the S-DPO paper's (β = 1, 3 negatives, learning rate 1e-5, 3 epochs, batch 128)."""

    seed: int = 42
    beta: float = field(default=1.0, metadata=rule(gt=0))
    num_negatives: int = field(default=3, metadata=rule(ge=1))
    learning_rate: float = field(default=1e-5, metadata=rule(gt=0))
    weight_decay: float = field(default=0.0, metadata=rule(ge=0))
    warmup_ratio: float = field(default=0.0, metadata=rule(ge=0, lt=1))
    max_grad_norm: float = field(default=1.0, metadata=rule(gt=0))
    batch_size: int = field(default=128, metadata=rule(ge=1))        # prompts per optimizer step
    micro_batch_size: int = field(default=16, metadata=rule(ge=1))   # prompts per forward (1 + n answers each)
    epochs: int = field(default=3, metadata=rule(ge=1))
    max_steps: int | None = field(default=None, metadata=rule(ge=1))
    max_train_samples: int | None = field(default=None, metadata=rule(ge=1))  # seeded sample of the prompts
    tasks: list[str] = field(default_factory=lambda: ["semantic"])   # SFT tasks whose rows become preferences
    max_length: int = field(default=256, metadata=rule(ge=8))        # prompt tokens kept = max_length - SID length
    select_metric: str = field(default="NDCG@10", metadata=rule(choices=SELECTION_METRICS[1:]))
    valid_ranking_rows: int | None = field(default=256, metadata=rule(ge=1))
    valid_num_beams: int = field(default=20, metadata=rule(ge=10))
    eval_every: int | None = field(default=None, metadata=rule(ge=1))  # also evaluate every N steps
    patience: int = field(default=3, metadata=rule(ge=1))
    autocast: str = field(default="auto", metadata=rule(choices=common.AUTOCAST_MODES))  # auto: bf16 on a GPU, float32 on a CPU
    checkpoint_every: int = field(default=50, metadata=rule(ge=1))
    keep_checkpoints: int = field(default=2, metadata=rule(ge=1))
    device: str = "auto"                                             # auto | cpu | cuda | cuda:N
    num_threads: int | None = field(default=None, metadata=rule(ge=1))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None, where: str = "sdpo.train") -> SDPOSettings:
        """Settings from a mapping; names the unknown key, the wrong type or the out-of-range value."""
        return from_params(cls, values, where)

    def check(self, where: str) -> None:
        if not self.tasks:
            raise ValueError(f"{where}.tasks must name at least one SFT task")
        common.check_device_name(self.device, f"{where}.device")


def split_config(cfg: Mapping[str, Any]) -> tuple[dict[str, Any], SDPOSettings]:
    """(process keys, validated settings) of an entry-point config."""
    process = {k: cfg[k] for k in PROCESS_KEYS if k in cfg}
    return process, SDPOSettings.from_dict({k: v for k, v in cfg.items() if k not in PROCESS_KEYS}, "sdpo config")


# --------------------------------------------------------------------------------------------
# preference data
# --------------------------------------------------------------------------------------------
@dataclass
class Preferences:
    """Prompts with their target item, and every item's SID tokens (the answers), in one item order."""

    prompts: list[list[int]]
    targets: list[int]                 # index into ``answers``
    answers: list[tuple[int, ...]]     # SID token ids per item (sorted SIDs)


def build_preferences(frame: pd.DataFrame, tokenizer, sid_map: Mapping[str, str], tasks: Sequence[str],
                      max_length: int, name: str = "sft_dataset_train") -> Preferences:
    """The rows of ``tasks`` whose answer is an item's SID; prompts rendered as decoding renders them."""
    missing = [c for c in ("task", "prompt", "answer") if c not in frame.columns]
    if missing:
        raise ValueError(f"{name}: missing column(s) {missing}")
    sids = sorted(set(sid_map.values()))
    position = {sid: i for i, sid in enumerate(sids)}
    answers = [tuple(modeling.sid_token_ids(tokenizer, sid_tokens(sid))) for sid in sids]
    keep = max_length - max(len(a) for a in answers)
    rows = frame[frame["task"].isin(list(tasks))]
    unknown = sorted(set(rows["answer"]) - set(position))
    if unknown:
        raise ValueError(f"{name}: {len(unknown)} answer(s) of tasks {list(tasks)} are not SIDs of the model's "
                         f"sid_map (e.g. {unknown[0][:80]!r}); S-DPO needs item answers")
    if len(rows) == 0:
        raise ValueError(f"{name}: no rows of tasks {list(tasks)} (tasks present: {sorted(set(frame['task']))})")
    prompts = [tokenizer.encode(render_for_model(p), add_special_tokens=False)[-keep:] for p in rows["prompt"]]
    return Preferences(prompts, [position[a] for a in rows["answer"]], answers)


def answer_logprobs(model, prompts: Sequence[list[int]], answers: Sequence[Sequence[tuple[int, ...]]],
                    pad_id: int) -> torch.Tensor:
    """``[P, A]`` summed token log-probs of each prompt's A answers (the prompt is encoded once)."""
    width = len(answers[0])
    flat_prompts = [p for p in prompts for _ in range(width)]
    flat_answers = [list(a) for group in answers for a in group]
    out = completion_logprobs(model, flat_prompts, flat_answers, pad_id)
    return out.logp.sum(dim=1).view(len(prompts), width)


def step_batch(num_prompts: int, batch_size: int, step: int, seed: int) -> list[int]:
    """The prompts of optimizer step ``step`` (0-based): a seeded permutation per epoch, in order."""
    steps_per_epoch = math.ceil(num_prompts / batch_size)
    epoch, position = divmod(step, steps_per_epoch)
    order = np.random.default_rng(seed + epoch).permutation(num_prompts)
    return order[position * batch_size : (position + 1) * batch_size].tolist()


def preference_step(policy, reference, prefs: Preferences, batch: Sequence[int], negatives: Sequence[list[int]],
                    settings: SDPOSettings, pad_id: int, amp_dtype, batch_total: int | None = None) -> dict[str, float]:
    """Accumulate the gradient of the batch's mean S-DPO loss; returns loss, accuracy and margin.

    Under DDP ``batch`` is this process's share of a step's ``batch_total`` prompts: the gradient and
    the returned values are then its part of the step's mean, which a sum over the processes completes."""
    total = len(batch) if batch_total is None else batch_total
    device = next(policy.parameters()).device
    totals = {"loss": 0.0, "accuracy": 0.0, "margin": 0.0}
    micro = settings.micro_batch_size
    for start in range(0, len(batch), micro):
        rows, negs = batch[start : start + micro], negatives[start : start + micro]
        prompts = [prefs.prompts[i] for i in rows]
        answers = [[prefs.answers[prefs.targets[i]]] + [prefs.answers[j] for j in n] for i, n in zip(rows, negs)]
        with common.autocast(device, amp_dtype):
            with torch.no_grad():
                ref = answer_logprobs(reference, prompts, answers, pad_id)
            pol = answer_logprobs(policy, prompts, answers, pad_id)
        parts = sdpo_loss(pol[:, 0], pol[:, 1:], ref[:, 0], ref[:, 1:], settings.beta)
        (parts.losses.sum() / total).backward()  # accumulated: the gradient of the batch mean
        totals["loss"] += float(parts.losses.detach().sum())
        totals["accuracy"] += parts.accuracy * len(rows)
        totals["margin"] += parts.margin * len(rows)
    return {k: v / total for k, v in totals.items()}


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------
def train(cfg: Mapping[str, Any]) -> dict[str, Any]:
    process, settings = split_config(cfg)
    started = time.time()
    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    dist = common.init_distributed(settings.device)
    common.seed_everything(settings.seed)
    ckpt_dir = Path(process["checkpoint_dir"])

    # models: the policy and a frozen reference, both the SFT model
    policy, tokenizer, meta = modeling.load_model_folder(process["model_path"], device=str(dist.device))
    reference, _, _ = modeling.load_model_folder(process["model_path"], device=str(dist.device))
    reference.requires_grad_(False)
    common.seed_rank_streams(settings.seed, dist)  # equal weights on every rank; own streams (rank 0 as before)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    amp_dtype = common.autocast_dtype(dist.device, settings.autocast)

    # data
    train_df = pd.read_parquet(process["train_path"])
    if settings.max_train_samples is not None and len(train_df) > settings.max_train_samples:
        picked = np.random.default_rng(settings.seed).permutation(len(train_df))[: settings.max_train_samples]
        train_df = train_df.iloc[np.sort(picked)].reset_index(drop=True)
    prefs = build_preferences(train_df, tokenizer, meta["sid_map"], settings.tasks, settings.max_length)
    if settings.num_negatives >= len(prefs.answers):
        raise ValueError(f"sdpo.train.num_negatives={settings.num_negatives} needs more items than the "
                         f"{len(prefs.answers)} of the model's sid_map")
    ranking = RankingValidation.build(tokenizer, meta["sid_map"], pd.read_parquet(process["valid_path"]),
                                      settings.valid_ranking_rows, settings.valid_num_beams, settings.max_length,
                                      settings.seed, max(len(tokenizer), policy.config.vocab_size),
                                      needed_for="nothing to select on", source=str(process["valid_path"]))

    steps_per_epoch = math.ceil(len(prefs.prompts) / settings.batch_size)
    total_steps = steps_per_epoch * settings.epochs
    if settings.max_steps is not None:
        total_steps = min(total_steps, settings.max_steps)
    optimizer, scheduler = common.optimizer_and_schedule(policy, settings.learning_rate, settings.weight_decay,
                                                         total_steps, int(settings.warmup_ratio * total_steps))

    selector = BestModelSelector(settings.select_metric, settings.patience)
    state = {**selector.state_dict(), "history": [], "valid_curve": [], "train_seconds": 0.0}
    step, resumed_from = 0, None
    if (last := common.latest_checkpoint(ckpt_dir)) is not None:
        restored = common.load_checkpoint(last, policy, optimizer, scheduler, rank=dist.rank)
        step, state, resumed_from = restored["step"], restored["trainer"], restored["step"]
        selector.load_state_dict(state)
        logger.info("Resumed S-DPO from %s (step %d of %d)", last, step, total_steps)

    def evaluate_and_select() -> None:
        """Valid ranking at ``step``; keeps the best model folder; early stopping."""
        ranked = ranking.evaluate(policy, dist, settings.micro_batch_size, amp_dtype)
        state["valid_curve"].append({"step": step, **ranked})
        value = ranked[settings.select_metric]
        if dist.is_main:
            logger.info("step %d: valid HR@10 %.4f, NDCG@10 %.4f", step, ranked["HR@10"], ranked["NDCG@10"])
            tracking.log_metrics({f"sdpo.valid_{k.replace('@', '_at_')}": v for k, v in ranked.items()}, step=step)
        improved = selector.update(step, value)  # the same on every rank
        state.update(selector.state_dict())
        if improved:
            checkpoints.save_best_folder(dist, policy, tokenizer, {**meta, "sdpo": {"step": step}}, ckpt_dir / "best")

    def checkpoint() -> None:
        checkpoints.save_checkpoint(dist, ckpt_dir, step, policy, optimizer, scheduler, state, settings.keep_checkpoints)

    if step == 0 and not state["valid_curve"]:
        evaluate_and_select()  # the SFT model is the first candidate: S-DPO must beat it on valid
        checkpoint()
    logger.info("S-DPO: %d prompts, %d items, %d negatives, beta %g, %d steps", len(prefs.prompts),
                len(prefs.answers), settings.num_negatives, settings.beta, total_steps)
    while step < total_steps and not selector.should_stop:
        t0 = time.time()
        policy.eval()  # dropout off (the valid ranking leaves the model in train mode)
        batch = step_batch(len(prefs.prompts), settings.batch_size, step, settings.seed)
        generator = torch.Generator().manual_seed(settings.seed * 100_003 + step)  # this step's negatives
        negatives = sample_negatives(len(prefs.answers), [prefs.targets[i] for i in batch],
                                     settings.num_negatives, generator)
        # the step's prompts (and their negatives, drawn for the whole batch) split over the processes
        mine = list(dist.shard(len(batch)))
        stats = preference_step(policy, reference, prefs, [batch[i] for i in mine], [negatives[i] for i in mine],
                                settings, pad_id, amp_dtype, batch_total=len(batch))
        if dist.enabled:  # each rank divided by the whole batch: the sums are the batch means
            all_reduce_gradients(policy)
            stats = dict(zip(stats, dist.all_reduce_sum(list(stats.values()))))
        torch.nn.utils.clip_grad_norm_(policy.parameters(), settings.max_grad_norm)
        learning_rate = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        state["train_seconds"] += time.time() - t0
        state["history"].append({"step": step, **stats, "learning_rate": learning_rate})
        if dist.is_main:
            tracking.log_metrics({f"sdpo.{k}": v for k, v in stats.items()}, step=step)
        if step % steps_per_epoch == 0 or step == total_steps or (settings.eval_every and step % settings.eval_every == 0):
            evaluate_and_select()
            checkpoint()
        elif step % settings.checkpoint_every == 0:
            checkpoint()

    result = {"steps": step, "total_steps": total_steps, "prompts": len(prefs.prompts),
              "select_metric": settings.select_metric, "best_metric": selector.best_metric,
              "best_step": selector.best_step, "stopped_early": selector.should_stop,
              "resumed_from_step": resumed_from, "train_seconds": state["train_seconds"],
              "final_loss": state["history"][-1]["loss"] if state["history"] else None,
              "final_accuracy": state["history"][-1]["accuracy"] if state["history"] else None,
              "valid_curve": state["valid_curve"], "history": state["history"], "wall_s": time.time() - started}
    if dist.is_main:  # the model folder and the result: rank 0 writes, the others wait
        summary = {"settings": asdict(settings), "started_from": str(process["model_path"]),
                   **{k: v for k, v in result.items() if k not in ("history", "valid_curve")}}
        checkpoints.publish_best(ckpt_dir / "best", Path(process["output_dir"]), lambda meta: {**meta, "sdpo": summary})
        if process.get("result_path"):
            Path(process["result_path"]).write_text(json.dumps(result, indent=1), encoding="utf-8")
    dist.barrier()
    common.close_distributed(dist)
    return result


def main(argv: list[str] | None = None) -> None:
    common.run_entry_point(train, argv)


if __name__ == "__main__":
    main()
