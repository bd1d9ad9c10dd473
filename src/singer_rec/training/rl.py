"""SINGER RL training entry point: GRPO with beam rollouts, SID-prefix curriculum and SID-level rewards.

Run as its own process (``singer_rec.training.launch.run_training("singer_rec.training.rl", config,
num_processes)``), i.e. ``python -m singer_rec.training.rl --config FILE`` or, for N processes,
``torchrun --nproc_per_node N -m singer_rec.training.rl --config FILE`` (gloo on CPU, nccl on GPU).

One optimiser step (``batch_size`` prompts, split over the processes):

1. Rollout (no gradients): one constrained beam search per prompt gives the group of k items
   with their beam positions (or top-k / dynamic sampling for the sampling ablations). A prompt
   none of whose k items is the target is *hard*; with ``sampling: beam+prefix`` it is rolled out
   again with the first ``floor((1 - t/T) L)`` target SID tokens forced, and its group becomes
   the k continuations. Title-answer tasks decode over the dictionary of canonical titles.
2. Rewards (``singer_rec.rl.rewards``) and group-normalised advantages.
3. ``inner_updates`` (μ) passes of the clipped surrogate with per-token ratios against the
   rollout policy, minus β·KL(k3) to the frozen reference, accumulated over micro-batches.

Learning rate: AdamW, linear warm-up then cosine decay to 0 over all updates.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from singer_rec import sid_format, tracking
from singer_rec.modeling import sid_token_ids
from singer_rec.prompts import render_for_model
from singer_rec.rl.curriculum import GUIDE_DEPTHS, guide_length, guide_length_by_items
from singer_rec.rl.grpo import completion_logprobs, group_advantages, grpo_loss
from singer_rec.rl.rewards import check_decay, check_title_reward, check_variant, group_rewards
from singer_rec.training import common

logger = logging.getLogger(__name__)

SAMPLING_VARIANTS = ("common", "dynamic", "beam", "beam+prefix")
ALIGNMENT_VARIANTS = ("none", "sft", "rl", "full")
# alignment variants whose RL stage keeps the alignment tasks (paper Fig. 4a)
RL_ALIGNMENT = {"none": False, "sft": False, "rl": True, "full": True}


@dataclass
class RLSettings:
    """Everything that shapes the RL run (``parameters_rl.yml`` -> ``rl``); defaults = the paper's settings (docs/rl.md)."""

    group_size: int = 16               # k: beam width = rollouts per prompt
    reward: str = "full"               # acc | acc+rank | full | sid-all
    sampling: str = "beam+prefix"      # common | dynamic | beam | beam+prefix
    alignment: str = "full"            # none | sft | rl | full (RL keeps alignment tasks for rl/full)
    sid_reward_decay: float = 0.5      # λ of Eq. 8
    title_reward: str = "acc-rank"     # hard title samples: acc-rank (paper) | prefix | prefix-share
    guide_depth: str = "schedule"      # schedule (paper, Eq. 3-5) | items (back off to >= guide_min_items items)
    guide_min_items: int = 2           # guide_depth: items
    autocast: str = "off"              # off | auto (bf16 where supported) | bf16: rollouts and update forwards
    beta: float = 0.1                  # KL weight (k3 estimator)
    clip_eps: float = 0.2
    learning_rate: float = 1e-5
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    max_grad_norm: float = 1.0
    batch_size: int = 512              # prompts (training samples) per optimiser step
    micro_batch_size: int = 32         # sequences per forward/backward (gradient accumulation)
    rollout_batch_size: int = 32       # prompts per decoder call
    epochs: int = 2
    max_steps: int | None = None       # cap on T (demo / tests)
    max_prompts: int | None = None     # use only the first N rows of rl_dataset (after shuffling)
    inner_updates: int = 1             # μ
    semantic_tasks: list[str] = field(default_factory=lambda: ["semantic"])  # tasks kept without RL alignment
    sample_top_k: int | None = None    # "common" sampling: top-k (None = all allowed tokens)
    dynamic_oversample: float = 1.5    # "dynamic" sampling: draw 1.5 k, keep distinct
    probe_prompts: int = 64            # fixed prompts whose rollout rewards are measured before/after RL
    checkpoint_every: int = 0          # optimiser steps between checkpoints (0 = only at the end)
    seed: int = 42

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> RLSettings:
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown rl parameter(s) {unknown}; known: {sorted(known)}")
        return cls(**values)


def validate_settings(settings: RLSettings, num_items: int | None = None) -> RLSettings:
    """Fail fast, before any model is loaded, on a configuration that cannot run."""
    check_variant(settings.reward)
    check_decay(settings.sid_reward_decay)
    check_title_reward(settings.title_reward)
    if settings.guide_depth not in GUIDE_DEPTHS:
        raise ValueError(f"unknown guide_depth {settings.guide_depth!r}; expected one of {list(GUIDE_DEPTHS)}")
    if settings.guide_min_items < 2:
        raise ValueError(f"rl guide_min_items must be >= 2 (a one-item group has zero advantage), got {settings.guide_min_items}")
    common.autocast_dtype(torch.device("cpu"), settings.autocast)  # raises on an unknown mode
    if settings.sampling not in SAMPLING_VARIANTS:
        raise ValueError(f"unknown sampling variant {settings.sampling!r}; expected one of {list(SAMPLING_VARIANTS)}")
    if settings.alignment not in ALIGNMENT_VARIANTS:
        raise ValueError(f"unknown alignment variant {settings.alignment!r}; expected one of {list(ALIGNMENT_VARIANTS)}")
    if settings.group_size < 2:
        raise ValueError(f"rl group_size (k) must be >= 2 for group-relative advantages, got {settings.group_size}")
    if num_items is not None and settings.group_size > num_items:
        raise ValueError(
            f"rl group_size (k={settings.group_size}) is larger than the item catalog ({num_items} items): "
            "beam search cannot return k distinct items"
        )
    for name in ("batch_size", "micro_batch_size", "rollout_batch_size", "epochs", "inner_updates"):
        if getattr(settings, name) < 1:
            raise ValueError(f"rl {name} must be >= 1, got {getattr(settings, name)}")
    if settings.max_steps is not None and settings.max_steps < 1:
        raise ValueError(f"rl max_steps must be >= 1 or null, got {settings.max_steps}")
    if not 0 < settings.clip_eps < 1:
        raise ValueError(f"rl clip_eps must be in (0, 1), got {settings.clip_eps}")
    if settings.beta < 0:
        raise ValueError(f"rl beta must be >= 0, got {settings.beta}")
    if settings.dynamic_oversample < 1:
        raise ValueError(f"rl dynamic_oversample must be >= 1, got {settings.dynamic_oversample}")
    return settings


class PhaseTimer:
    """Wall seconds per named phase of one optimiser step (a phase entered twice adds up).

    The trainer records them per step (``time_<phase>`` in the history and MLflow), so a slow step
    says where its time went without a profiler.
    """

    clock = staticmethod(time.perf_counter)  # a benchmark may swap in time.process_time (CPU seconds)

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = self.clock()
        try:
            yield
        finally:
            self.seconds[name] += self.clock() - started

    def record(self) -> dict[str, float]:
        return {f"time_{name}": value for name, value in self.seconds.items()}


class _NullTimer(PhaseTimer):
    """Times nothing (rollouts outside a training step: the probes, tests)."""

    def __call__(self, name: str):
        return contextlib.nullcontext()


_NO_TIMER = _NullTimer()


# -- the item dictionaries ----------------------------------------------------------------------


@dataclass
class Dictionary:
    """The token sequences the decoder may emit (one per item or title), indexed, and their trie."""

    sequences: list[tuple[int, ...]]
    index: dict[tuple[int, ...], int]
    trie: Any

    @classmethod
    def build(cls, sequences: Sequence[Sequence[int]], vocab_size: int) -> Dictionary:
        from singer_rec.decoding import PrefixTrie

        seqs = [tuple(int(t) for t in s) for s in sequences]
        return cls(seqs, {s: i for i, s in enumerate(seqs)}, PrefixTrie.build(seqs, vocab_size))


def sid_ids(tokenizer, sid: str) -> tuple[int, ...]:
    """A SID's token ids (each SID token is one token of the model's tokenizer)."""
    return tuple(sid_token_ids(tokenizer, sid_format.sid_tokens(sid)))


def title_token_ids(tokenizer, title: str) -> tuple[int, ...]:
    """A title as the model writes it: its tokens, then EOS (so no title is a prefix of another)."""
    return tuple(tokenizer(title, add_special_tokens=False)["input_ids"]) + (tokenizer.eos_token_id,)


# -- examples -----------------------------------------------------------------------------------


@dataclass
class Example:
    prompt_ids: list[int]
    target: tuple[int, ...]   # target token sequence (SID tokens, or title tokens + EOS)
    is_sid: bool              # SID answer (hierarchical rewards, curriculum) vs title answer
    task: str


def build_examples(frame, tokenizer, sid_dict: Dictionary, title_dict: Dictionary | None, settings: RLSettings) -> list[Example]:
    """rl_dataset rows -> examples; tasks outside the alignment setting are dropped."""
    for column in ("task", "prompt", "answer"):
        if column not in frame.columns:
            raise ValueError(f"rl_dataset: missing column {column!r} (has {list(frame.columns)})")
    keep_alignment = RL_ALIGNMENT[settings.alignment]
    examples: list[Example] = []
    for row, (task, prompt, answer) in enumerate(zip(frame["task"], frame["prompt"], frame["answer"])):
        if not keep_alignment and task not in settings.semantic_tasks:
            continue
        try:
            target = sid_ids(tokenizer, answer)
            is_sid = True
            if target not in sid_dict.index:
                raise ValueError(f"rl_dataset row {row} (task {task!r}): answer SID {answer!r} is not an item of the model's SID map")
        except ValueError as error:
            if "not a semantic ID" not in str(error):
                raise
            is_sid = False
            target = title_token_ids(tokenizer, answer)
            if title_dict is None or target not in title_dict.index:
                raise ValueError(
                    f"rl_dataset row {row} (task {task!r}): answer {answer[:80]!r} is neither a SID nor a canonical title of the model"
                ) from None
        prompt_ids = tokenizer(render_for_model(prompt), add_special_tokens=False)["input_ids"]
        examples.append(Example(list(prompt_ids), target, is_sid, task))
    if not examples:
        raise ValueError(f"rl_dataset: no rows left for alignment={settings.alignment!r} (semantic_tasks={settings.semantic_tasks})")
    return examples


# -- rollouts -----------------------------------------------------------------------------------


@dataclass
class Group:
    """One prompt's rollout group, ready for the loss."""

    prompt_ids: list[int]              # prompt (+ the forced SID prefix of a guided hard sample)
    completions: list[list[int]]       # generated tokens after the prompt/prefix, one per candidate
    rewards: list[float]
    hard: bool                         # the unguided rollout had no hit
    hit: bool                          # the unguided rollout contained the target
    guide: int                         # forced prefix length (0 if none)
    is_sid: bool
    candidates: list[tuple[int, ...]] = field(default_factory=list)  # full token sequences, beam order


def amp_dtype(model, settings: RLSettings) -> torch.dtype | None:
    """The autocast dtype of ``settings.autocast`` on the model's device (None: float32)."""
    return common.autocast_dtype(next(model.parameters()).device, settings.autocast)


def _decode(model, prompts, dictionary: Dictionary, settings: RLSettings, k: int, forced, generator, pad_id):
    """Item indices per prompt, best first, from the configured sampler."""
    from singer_rec import decoding

    amp = amp_dtype(model, settings)
    if settings.sampling in ("beam", "beam+prefix"):
        return decoding.beam_search(
            model, prompts, dictionary.trie, num_beams=k, num_return=k,
            forced_prefixes=forced, batch_size=settings.rollout_batch_size, pad_token_id=pad_id, autocast_dtype=amp,
        ).items
    dynamic = settings.sampling == "dynamic"
    return decoding.sample(
        model, prompts, dictionary.trie, num_samples=k,
        top_k=None if dynamic else settings.sample_top_k,
        oversample=settings.dynamic_oversample if dynamic else 1.0, dedupe=dynamic,
        forced_prefixes=forced, generator=generator, batch_size=settings.rollout_batch_size, pad_token_id=pad_id,
        autocast_dtype=amp,
    ).items


def rollout(
    model,
    examples: Sequence[Example],
    sid_dict: Dictionary,
    title_dict: Dictionary | None,
    settings: RLSettings,
    step: int,
    total_steps: int,
    pad_token_id: int,
    generator: torch.Generator | None = None,
    guide: bool = True,
    timer: PhaseTimer = _NO_TIMER,
) -> list[Group]:
    """Roll out the current policy on ``examples`` and score each group (Eq. 3-9)."""
    groups: list[Group | None] = [None] * len(examples)
    for is_sid, dictionary in ((True, sid_dict), (False, title_dict)):
        rows = [i for i, ex in enumerate(examples) if ex.is_sid == is_sid]
        if not rows:
            continue
        k = min(settings.group_size, len(dictionary.sequences))
        with timer("rollout_sid" if is_sid else "rollout_title"):
            items = _decode(model, [examples[i].prompt_ids for i in rows], dictionary, settings, k, None, generator,
                            pad_token_id)
        guided: list[tuple[int, int]] = []  # (row, guide length)
        for row, found in zip(rows, items):
            ex = examples[row]
            candidates = [dictionary.sequences[j] for j in found]
            hit = ex.target in candidates
            groups[row] = Group(ex.prompt_ids, [list(c) for c in candidates], [], not hit, hit, 0, is_sid, candidates)
            if not hit and is_sid and guide and settings.sampling == "beam+prefix":
                length = guide_length(step, total_steps, len(ex.target))
                if settings.guide_depth == "items":
                    length = guide_length_by_items(length, ex.target, lambda p, t=dictionary.trie: t.items_under(t.walk(p)),
                                                   settings.guide_min_items)
                if length > 0:
                    guided.append((row, length))
        if guided:
            forced = [list(examples[r].target[:n]) for r, n in guided]
            # the decoder returns min(k, items under the prefix) continuations per prompt
            with timer("rollout_guided"):
                found_lists = _decode(model, [examples[r].prompt_ids for r, _ in guided], dictionary, settings, k,
                                      forced, generator, pad_token_id)
            for (row, length), prefix, found in zip(guided, forced, found_lists):
                candidates = [dictionary.sequences[j] for j in found]
                groups[row] = Group(
                    examples[row].prompt_ids + prefix, [list(c[length:]) for c in candidates], [],
                    True, False, length, True, candidates,
                )
        with timer("rewards"):
            for row in rows:
                group, ex = groups[row], examples[row]
                group.rewards = group_rewards(
                    group.candidates, ex.target, group.hard, settings.reward,
                    settings.sid_reward_decay, hierarchical=is_sid, title_reward=settings.title_reward,
                )
    return groups  # type: ignore[return-value]


# -- optimisation -------------------------------------------------------------------------------


def policy_update(
    policy, reference, groups: Sequence[Group], settings: RLSettings, optimizer, scheduler, pad_token_id: int,
    dist: common.Dist, timer: PhaseTimer = _NO_TIMER,
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
            old_logps.append(completion_logprobs(policy, prompts, completions, pad_token_id).logp if settings.inner_updates > 1 else None)
            ref_logps.append(completion_logprobs(reference, prompts, completions, pad_token_id).logp if reference is not None and settings.beta > 0 else None)
    totals = defaultdict(float)
    policy.train()
    for inner in range(settings.inner_updates):
        optimizer.zero_grad(set_to_none=True)
        for chunk, old, ref in zip(micro, old_logps, ref_logps):
            prompts, completions = [s[0] for s in chunk], [s[1] for s in chunk]
            advantages = torch.tensor([s[2] for s in chunk], dtype=torch.float32, device=device)
            with timer("policy_forward"), common.autocast(device, amp):
                out = completion_logprobs(policy, prompts, completions, pad_token_id, with_entropy=inner == 0)
                parts = grpo_loss(
                    out.logp, out.logp.detach() if old is None else old, ref, advantages, out.mask,
                    clip_eps=settings.clip_eps, beta=settings.beta, num_sequences=int(total_sequences),
                )
            with timer("backward"):
                parts.loss.backward()
            if inner == settings.inner_updates - 1:
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


def rollout_stats(groups: Sequence[Group]) -> dict[str, float]:
    """Per-step rollout statistics summed over this process (divided after the all-reduce)."""
    rewards = [r for g in groups for r in g.rewards]
    hard = [g for g in groups if g.hard]
    return {
        "prompts": float(len(groups)),
        "hits": float(sum(g.hit for g in groups)),
        "hard": float(len(hard)),
        "guide_sum": float(sum(g.guide for g in hard)),
        "reward_sum": float(sum(rewards)),
        "rewards": float(len(rewards)),
    }


# -- the training loop --------------------------------------------------------------------------


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
    total_updates = total_steps * settings.inner_updates
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


def build_dictionaries(tokenizer, meta: Mapping[str, Any], vocab_size: int, need_titles: bool) -> tuple[Dictionary, Dictionary | None, list[str]]:
    """The SID dictionary (item order = sorted item ids) and, when needed, the title dictionary."""
    item_ids = sorted(meta["sid_map"])
    owners: dict[str, str] = {}
    for item in item_ids:  # the decoder needs one item per SID: say which items collide
        sid = meta["sid_map"][item]
        if sid in owners:
            raise ValueError(f"model sid_map: items {owners[sid]!r} and {item!r} share the SID {sid} "
                             "(SIDs must be one-to-one; the sid stage adds a suffix level to collisions)")
        owners[sid] = item
    sid_dict = Dictionary.build([sid_ids(tokenizer, meta["sid_map"][i]) for i in item_ids], vocab_size)
    title_dict = None
    if need_titles:
        unique = sorted({title_token_ids(tokenizer, t) for t in meta.get("titles", {}).values() if t})
        if unique:
            title_dict = Dictionary.build(unique, vocab_size)
    return sid_dict, title_dict, item_ids


def build_base_model_folder(model_cfg: Mapping[str, Any], items, item_sids, templates: Mapping[str, Any],
                            seed: int, folder: Path) -> Path:
    """The RL-only variant's start: a base preset (no SFT) with the catalog's SID tokens, as a model folder."""
    from singer_rec import modeling
    from singer_rec.training.sft import tokenizer_corpus

    sid_map = dict(zip(item_sids["item_id"].astype(str), item_sids["sid"].astype(str)))
    sid_vocab = modeling.sid_vocabulary_for(sid_map.values())
    tokenizer = None
    if model_cfg["preset"] == "scratch":
        scratch = {**modeling.SCRATCH_DEFAULTS, **(model_cfg.get("scratch") or {})}
        tokenizer = modeling.train_scratch_tokenizer(tokenizer_corpus(items, templates), scratch["tokenizer_vocab_size"])
    model, tokenizer = modeling.build_model(model_cfg, [], sid_vocab, seed=seed, tokenizer=tokenizer)
    meta = {
        "preset": model_cfg["preset"],
        "sid_map": sid_map,
        "titles": dict(zip(items["item_id"].astype(str), items["title"].astype(str))),
        "templates": dict(templates),
        "train": {"model": dict(model_cfg), "note": "RL-only variant: base model, no SFT"},
    }
    return modeling.save_model_folder(model, tokenizer, meta, folder)


def retarget_model_folder(source: Path, items, item_sids, folder: Path) -> Path:
    """A copy of a trained model folder that speaks another domain's items (the unseen-domain study).

    The weights and tokenizer stay; ``sid_map`` and ``titles`` become the new catalog's. Every SID
    token of the new catalog must already be a token of the model (same codebook shape), else a
    clear error. Written to a temporary sibling and renamed into place.
    """
    import tempfile

    from transformers import AutoTokenizer

    from singer_rec import modeling

    source, folder = Path(source), Path(folder)
    meta = modeling.read_meta(source)
    tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    sid_map = dict(zip(item_sids["item_id"].astype(str), item_sids["sid"].astype(str)))
    vocab = tokenizer.get_vocab()
    missing = sorted({t for sid in sid_map.values() for t in sid_format.sid_tokens(sid)} - set(vocab))
    if missing:
        raise ValueError(f"model {source} lacks {len(missing)} SID token(s) of the new catalog (e.g. {missing[:5]}): "
                         "the two domains need the same codebook shape")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        staged = tmp / "folder"
        shutil.copytree(source, staged)
        new_meta = {**meta, "sid_map": sid_map, "titles": dict(zip(items["item_id"].astype(str), items["title"].astype(str))),
                    "unseen_domain": {"trained_on": str(source), "trained_items": len(meta["sid_map"])}}
        (staged / modeling.META_FILE).write_text(json.dumps(new_meta, indent=1, ensure_ascii=False), encoding="utf-8")
        modeling.replace_folder_atomically(staged, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def run(config: Mapping[str, Any]) -> dict[str, Any]:
    """Train from files. Config keys: ``model_path`` (the policy's start: SFT model, or a base model
    folder for the RL-only variant), ``reference_path`` (frozen KL reference; default model_path),
    ``dataset_path`` (rl_dataset parquet), ``output_path`` (the RL model folder to write),
    ``checkpoint_dir``, ``result_path`` (json summary), ``device`` (auto|cpu|cuda), ``rl`` (settings)."""
    import pandas as pd

    from singer_rec.modeling import load_model_folder, save_model_folder

    settings = RLSettings.from_dict(config.get("rl"))
    dist = common.init_distributed(config.get("device", "auto"))
    try:
        common.seed_everything(settings.seed)
        policy, tokenizer, meta = load_model_folder(config["model_path"], device=str(dist.device))
        validate_settings(settings, num_items=len(meta["sid_map"]))
        reference = None
        if settings.beta > 0:
            reference, _, _ = load_model_folder(config.get("reference_path") or config["model_path"], device=str(dist.device))
        frame = pd.read_parquet(config["dataset_path"])
        if settings.max_prompts is not None:
            frame = frame.sample(frac=1.0, random_state=settings.seed).head(settings.max_prompts).reset_index(drop=True)
        need_titles = RL_ALIGNMENT[settings.alignment]
        sid_dict, title_dict, _ = build_dictionaries(tokenizer, meta, policy.config.vocab_size, need_titles)
        examples = build_examples(frame, tokenizer, sid_dict, title_dict, settings)
        logger.info("RL: %d prompts (%d with SID answers), k=%d, reward=%s, sampling=%s, alignment=%s, %d process(es)",
                    len(examples), sum(e.is_sid for e in examples), settings.group_size, settings.reward,
                    settings.sampling, settings.alignment, dist.world_size)
        if dist.is_main:
            tracking.log_params({"rl.prompts": len(examples), "rl.items": len(sid_dict.sequences)})
        checkpoint_dir = Path(config["checkpoint_dir"]) if config.get("checkpoint_dir") else None
        started = time.perf_counter()
        result = train_grpo(policy, reference, tokenizer, examples, sid_dict, title_dict, settings, checkpoint_dir,
                            dist=dist, keep_checkpoints=int(config.get("keep_checkpoints", 2)))
        result["wall_seconds"] = time.perf_counter() - started
        result["prompts"] = len(examples)
        if dist.is_main:
            meta = dict(meta)
            meta["rl"] = {"settings": asdict(settings), "steps": result["total_steps"], "prompts": len(examples),
                          "started_from": str(config["model_path"])}
            save_model_folder(policy, tokenizer, meta, config["output_path"])
            if config.get("result_path"):
                Path(config["result_path"]).write_text(json.dumps(result), encoding="utf-8")
        dist.barrier()
        return result
    finally:
        common.close_distributed(dist)


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    run(common.read_config(list(argv) if argv is not None else None))


if __name__ == "__main__":
    main()
