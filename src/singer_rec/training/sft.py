"""SFT entry point: ``python -m singer_rec.training.sft --config FILE`` (or under torchrun).

Trains a preset (``singer_rec.modeling``) on the task prompts with the loss on the answer tokens
only, AdamW + cosine, effective batch ``batch_size`` samples per optimizer step (gradient
accumulation over micro-batches and processes), checkpoints every ``checkpoint_every`` steps and
at every evaluation, and exact resume from the last one. Writes the best model folder to
``output_dir`` and a result json to ``result_path``.

Model selection: at every epoch end (and every ``eval_every`` steps) the model ranks a fixed,
seeded sample of the valid rows by constrained beam search over the item dictionary and the
best ``select_metric`` (NDCG@10 by default) is kept; ``patience`` evaluations without a better
one stop training. The valid loss is logged beside it but does not select: on ranking data it
starts rising while the ranking still improves. ``select_metric: loss`` restores loss selection.

Config: the process keys (train_path, valid_path, items_path, item_sids_path, output_dir,
checkpoint_dir, result_path, model, templates) plus the fields of :class:`SFTSettings`.

The run: :func:`setup` (data, tokenizer, model, optimizer, valid ranking: an :class:`SFTRun`), then
per step :class:`StepBatches` and :func:`train_step`, at each evaluation :func:`evaluate` and the
``BestModelSelector`` (``training.validation``), :func:`checkpoint`, and at the end :func:`finish`.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from singer_rec import modeling, tracking
from singer_rec.params import from_params, rule
from singer_rec.prompts import render_for_model
from singer_rec.training import checkpoints, common, memory
from singer_rec.metrics import SELECTION_METRICS
from singer_rec.training.validation import BestModelSelector, RankingValidation, read_table, seeded_sample

logger = logging.getLogger(__name__)

PROCESS_KEYS = ("train_path", "valid_path", "items_path", "item_sids_path", "output_dir", "checkpoint_dir",
                "result_path", "model", "templates")


@dataclass
class SFTSettings:
    """The ``sft.train`` parameters (``parameters_sft.yml``); unknown keys are rejected."""

    RENAMED_KEYS: ClassVar[dict[str, str]] = {"lr": "learning_rate"}  # trl's name, as in rl.settings
    seed: int = 42
    learning_rate: float = field(default=3e-4, metadata=rule(gt=0))
    weight_decay: float = field(default=0.0, metadata=rule(ge=0))
    warmup_ratio: float = field(default=0.03, metadata=rule(ge=0, lt=1))
    # samples per optimizer step (over micro-batches and processes)
    batch_size: int = field(default=128, metadata=rule(ge=1))
    micro_batch_size: int = field(default=16, metadata=rule(ge=1))  # samples per forward pass
    epochs: int = field(default=10, metadata=rule(ge=1))
    patience: int = field(default=1, metadata=rule(ge=1))  # evaluations without a better select_metric before stopping
    max_steps: int | None = field(default=None, metadata=rule(ge=1))  # cap on optimizer steps (null: epochs decide)
    max_train_samples: int | None = field(default=None, metadata=rule(ge=1))
    max_valid_samples: int | None = field(default=None, metadata=rule(ge=1))  # valid rows for the valid loss (seeded sample)
    max_length: int = field(default=256, metadata=rule(ge=1))  # tokens; long prompts lose their start, never the answer
    group_by_length: bool = False       # batches of similar length (shuffled mega-batches, as HF's sampler)
    task_fractions: dict[str, float] | None = None  # share of a task's rows per epoch, e.g. {sid_to_title: 0.5}
    # loss | HR@K | NDCG@K (K in 3, 5, 10) on the valid ranking sample
    select_metric: str = field(default="NDCG@10", metadata=rule(choices=SELECTION_METRICS))
    # valid rows ranked at each evaluation (seeded sample; null: all)
    valid_ranking_rows: int | None = field(default=256, metadata=rule(ge=1))
    valid_num_beams: int = field(default=20, metadata=rule(ge=10))  # beam width of that ranking (>= the largest K)
    # also evaluate every N steps (null: at epoch ends only)
    eval_every: int | None = field(default=None, metadata=rule(ge=1))
    autocast: str = field(default="auto", metadata=rule(choices=common.AUTOCAST_MODES))
    checkpoint_every: int = field(default=100, metadata=rule(ge=1))
    keep_checkpoints: int = field(default=2, metadata=rule(ge=1))
    log_every: int = field(default=1, metadata=rule(ge=1))
    device: str = "auto"                # auto | cpu | cuda
    # torch threads in the training process (null: torch default)
    num_threads: int | None = field(default=None, metadata=rule(ge=1))
    gradient_checkpointing: bool = False  # recompute layer activations in the backward: less memory, more compute

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None, where: str = "sft.train") -> SFTSettings:
        """Settings from a mapping; names the unknown key, the wrong type or the out-of-range value."""
        return from_params(cls, values, where)  # types and field rules, then ``check``

    def check(self, where: str = "sft.train") -> None:
        for task, fraction in (self.task_fractions or {}).items():
            if not 0 < fraction <= 1:
                raise ValueError(f"{where}.task_fractions.{task} must be in (0, 1], got {fraction}")
        common.check_device_name(self.device, f"{where}.device")


def split_config(cfg: Mapping[str, Any]) -> tuple[dict[str, Any], SFTSettings]:
    """(process keys, validated settings) of an entry-point config."""
    process = {k: cfg[k] for k in PROCESS_KEYS if k in cfg}
    return process, SFTSettings.from_dict({k: v for k, v in cfg.items() if k not in PROCESS_KEYS}, "sft config")


IGNORE_INDEX = -100
LENGTH_GROUP_BATCHES = 50  # batches per length-sorted mega-batch (transformers' LengthGroupedSampler)
_SID_IN_TEXT = re.compile(r"(?:<[a-z]_\d+>)+")


# --------------------------------------------------------------------------------------------
# examples
# --------------------------------------------------------------------------------------------
def encode_example(tokenizer, prompt: str, answer: str, max_length: int) -> tuple[list[int], list[int]]:
    """Token ids of prompt+answer+EOS and labels that are -100 everywhere but on answer and EOS.

    The prompt is rendered with ``render_for_model`` and tokenized on its own, as decoding does.
    Too long examples lose the start of the prompt; the answer is never cut.
    """
    prompt_ids = tokenizer.encode(render_for_model(prompt), add_special_tokens=False)
    answer_ids = tokenizer.encode(answer, add_special_tokens=False) + [tokenizer.eos_token_id]
    if len(answer_ids) >= max_length:
        raise ValueError(f"answer of {len(answer_ids)} tokens does not fit max_length={max_length}: {answer[:80]!r}")
    keep = max_length - len(answer_ids)
    prompt_ids = prompt_ids[-keep:]
    return prompt_ids + answer_ids, [IGNORE_INDEX] * len(prompt_ids) + answer_ids


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (-100 on padding)."""
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (ids, labs) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
        mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def answer_token_loss(model, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the label tokens (next-token shifted) and their count.

    The output head runs only at the positions whose next token is a label (transformers'
    ``logits_to_keep`` as a boolean mask): with a 152k vocabulary the full ``[B, T, V]`` logits of a
    micro-batch are gigabytes, nearly all at prompt and padding positions the loss ignores. The call
    still goes through ``model``'s own forward, so DDP's gradient sync and peft's hooks see it.
    """
    targets = batch["labels"][:, 1:]
    # position t predicts token t + 1; the last position predicts nothing
    keep = torch.nn.functional.pad(targets != IGNORE_INDEX, (0, 1), value=False)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep).logits
    if logits.dim() != 2:
        raise TypeError(f"{type(model).__name__}.forward ignored the boolean logits_to_keep mask "
                        f"(logits of shape {tuple(logits.shape)})")
    # both in row-major order: the rows of ``logits`` are the True positions of ``keep``
    loss = torch.nn.functional.cross_entropy(logits.float(), targets[targets != IGNORE_INDEX], reduction="sum")
    return loss, int(keep.sum())


def epoch_order(lengths: Sequence[int], seed: int, epoch: int, batch_size: int,
                group_by_length: bool = False) -> np.ndarray:
    """The sample order of one epoch: step ``s`` trains on ``order[s * batch_size : (s + 1) * batch_size]``.

    A seeded permutation (the same on every process, so DDP ranks split the same batch). With
    ``group_by_length`` the permutation is cut into mega-batches of ``LENGTH_GROUP_BATCHES``
    batches, each sorted by length and cut into batches, and the full batches are shuffled; a
    short last batch stays last so every step but the last has ``batch_size`` samples.
    """
    rng = np.random.default_rng(seed + epoch)
    order = rng.permutation(len(lengths))
    if not group_by_length or len(order) == 0:
        return order
    mega = batch_size * LENGTH_GROUP_BATCHES
    batches = []
    for start in range(0, len(order), mega):
        chunk = order[start : start + mega]
        chunk = chunk[np.argsort([lengths[i] for i in chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    short = [batches.pop()] if batches and len(batches[-1]) < batch_size else []
    return np.concatenate([batches[i] for i in rng.permutation(len(batches))] + short)


def epoch_rows(tasks: Sequence[str], fractions: Mapping[str, float] | None, seed: int, epoch: int) -> np.ndarray:
    """The train rows of one epoch, ascending: every row of a task without a fraction, and for a task
    with fraction ``f`` a window of ``round(f * n)`` of its ``n`` rows (at least one).

    The windows walk one seeded permutation of the task's rows epoch after epoch (wrapping round),
    so every row is trained on once per ``1 / f`` epochs and an epoch always has the same size.
    """
    tasks = np.asarray(tasks, dtype=object)
    if not fractions:
        return np.arange(len(tasks))
    unknown = sorted(set(fractions) - set(tasks.tolist()))
    if unknown:
        raise ValueError(f"sft.train.task_fractions: task(s) {unknown} have no train rows; "
                         f"tasks in sft_dataset_train: {sorted(set(tasks.tolist()))}")
    keep = [np.flatnonzero(~np.isin(tasks, list(fractions)))]
    for offset, task in enumerate(sorted(fractions)):
        rows = np.flatnonzero(tasks == task)
        take = max(1, round(fractions[task] * len(rows)))
        walk = np.random.default_rng([seed, offset]).permutation(rows)
        keep.append(walk[(np.arange(take) + epoch * take) % len(rows)])
    return np.sort(np.concatenate(keep))


def micro_batches(examples: list[tuple[list[int], list[int]]], micro_batch_size: int) -> list[list]:
    """A step's examples sorted by length and cut into micro-batches: similar lengths pad less,
    and the step's gradient (a sum over them) is unchanged."""
    ordered = sorted(examples, key=lambda example: len(example[0]))
    return [ordered[i : i + micro_batch_size] for i in range(0, len(ordered), micro_batch_size)]


def tokenizer_corpus(items: pd.DataFrame, templates: Mapping[str, Iterable[str]]) -> list[str]:
    """Texts the scratch tokenizer is trained on: item fields and templates (placeholders removed)."""
    texts: list[str] = []
    for column in ("title", "description", "brand"):
        if column in items.columns:
            texts.extend(str(v) for v in items[column].fillna("") if str(v))
    if "categories" in items.columns:
        texts.extend(" ".join(map(str, c)) for c in items["categories"] if c is not None and len(c))
    for phrasings in templates.values():
        texts.extend(re.sub(r"\{[a-z_]+\}", "", t) for t in phrasings)
    texts.append(render_for_model(""))
    return texts


def check_sids_against_catalog(item_sids: pd.DataFrame, frames: Mapping[str, pd.DataFrame]) -> dict[str, str]:
    """The item->SID map; raises when the SFT data mentions a SID the catalog does not have."""
    sid_map = dict(zip(item_sids["item_id"].astype(str), item_sids["sid"].astype(str)))
    if len(set(sid_map.values())) != len(sid_map):
        raise modeling.SidMapMismatchError("item_sids: two items share a SID (the map must be one-to-one)")
    known = set(sid_map.values())
    for name, frame in frames.items():
        for row, (prompt, answer) in enumerate(zip(frame["prompt"], frame["answer"])):
            for sid in _SID_IN_TEXT.findall(prompt) + _SID_IN_TEXT.findall(answer):
                if sid not in known:
                    raise modeling.SidMapMismatchError(
                        f"{name} row {row}: SID {sid} is not in item_sids (prompts built from other SIDs? "
                        "rerun the prompts pipeline)")
    return sid_map


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------
def _shared_tokenizer(process: Mapping[str, Any], dist: common.Dist, items: pd.DataFrame):
    """Build the tokenizer once (rank 0), store it with the checkpoints, load it everywhere."""
    from transformers import AutoTokenizer

    folder = Path(process["checkpoint_dir"]) / "tokenizer"
    if dist.is_main and not (folder / "tokenizer_config.json").is_file():
        sid_vocab = modeling.sid_vocabulary_for(pd.read_parquet(process["item_sids_path"])["sid"])
        tokenizer = modeling.base_tokenizer(process["model"], tokenizer_corpus(items, process["templates"]))
        modeling.add_sid_tokens(tokenizer, sid_vocab)
        tmp = folder.with_name(".tokenizer.tmp")
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, folder)
    dist.barrier()
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def _validation_loss(model, examples, micro_batch_size, pad_id, dist, amp_dtype) -> float:
    model.eval()
    total, count = 0.0, 0
    mine = sorted(examples[dist.rank :: dist.world_size], key=lambda example: len(example[0]))
    with torch.no_grad():
        for start in range(0, len(mine), micro_batch_size):
            batch = {k: v.to(dist.device) for k, v in collate(mine[start : start + micro_batch_size], pad_id).items()}
            with common.autocast(dist.device, amp_dtype):
                loss, n = answer_token_loss(model, batch)
            total += float(loss)
            count += n
    model.train()
    total, count = dist.all_reduce_sum([total, count])
    return total / max(count, 1)


@dataclass
class SFTRun:
    """One SFT run's fixed parts, built once by :func:`setup`: settings, data, model, optimizer, schedule."""

    settings: SFTSettings
    process: dict[str, Any]       # the process keys (paths, model, templates)
    dist: common.Dist
    model: Any                    # the model that is saved (and whose gradients are clipped)
    ddp_model: Any                # the forward goes through it: ``model`` itself, or its DDP wrapper
    tokenizer: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    amp_dtype: torch.dtype | None
    train_examples: list[tuple[list[int], list[int]]]
    valid_examples: list[tuple[list[int], list[int]]]
    train_tasks: list[str]
    epoch_size: int               # train samples per epoch (fewer with ``task_fractions``)
    steps_per_epoch: int
    total_steps: int
    ranking: RankingValidation | None
    meta: dict[str, Any]          # the model folder's meta; ``train`` gets the trainer state at each save

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.process["checkpoint_dir"])

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id


def setup(process: Mapping[str, Any], settings: SFTSettings, dist: common.Dist) -> SFTRun:
    """Read and check the data, build the tokenizer (once, shared by the processes), the model, the
    examples, the optimizer and its schedule, and the valid ranking."""
    train_df = seeded_sample(read_table(process["train_path"], ["task", "prompt", "answer"]), settings.max_train_samples,
                             settings.seed)
    valid_df = seeded_sample(read_table(process["valid_path"], ["task", "prompt", "answer"]), settings.max_valid_samples,
                             settings.seed)
    items = read_table(process["items_path"], ["item_id", "title"])
    item_sids = read_table(process["item_sids_path"], ["item_id", "sid"])
    sid_map = check_sids_against_catalog(item_sids, {"sft_dataset_train": train_df, "sft_dataset_valid": valid_df})
    if len(train_df) == 0:
        raise ValueError(f"{process['train_path']}: no training rows")

    tokenizer = _shared_tokenizer(process, dist, items)
    sid_vocab = modeling.sid_vocabulary_for(sid_map.values())
    model, tokenizer = modeling.build_model(process["model"], [], sid_vocab, seed=settings.seed, tokenizer=tokenizer)
    lora = (process["model"].get("lora") or {})
    if lora.get("enabled", False):
        model = modeling.apply_lora(model, lora, modeling.sid_token_ids(tokenizer, sid_vocab))
    if settings.gradient_checkpointing:
        memory.enable_gradient_checkpointing(model)
    model.to(dist.device).train()
    amp_dtype = common.autocast_dtype(dist.device, settings.autocast)

    def encode(df: pd.DataFrame) -> list[tuple[list[int], list[int]]]:
        """Every row's example; under DDP each rank encodes its share and the shares are gathered."""
        prompts, answers = df["prompt"].tolist(), df["answer"].tolist()
        mine = [encode_example(tokenizer, prompts[i], answers[i], settings.max_length) for i in dist.shard(len(df))]
        return dist.gather_shards(len(df), mine)

    train_examples, valid_examples = encode(train_df), encode(valid_df)

    train_tasks = train_df["task"].astype(str).tolist()
    epoch_size = len(epoch_rows(train_tasks, settings.task_fractions, settings.seed, 0))
    steps_per_epoch = math.ceil(epoch_size / settings.batch_size)
    total_steps = steps_per_epoch * settings.epochs
    if settings.max_steps:
        total_steps = min(total_steps, settings.max_steps)
    optimizer, scheduler = common.optimizer_and_schedule(
        model, settings.learning_rate, settings.weight_decay, total_steps, int(settings.warmup_ratio * total_steps))

    ddp_model = model
    if dist.enabled:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dist.local_rank] if dist.device.type == "cuda" else None)
    # the init and the data order are equal on every rank; dropout masks now differ (rank 0 as before)
    common.seed_rank_streams(settings.seed, dist)

    meta = {
        "preset": process["model"]["preset"],
        "sid_map": sid_map,
        "titles": dict(zip(items["item_id"].astype(str), items["title"].astype(str))),
        "templates": process["templates"],
        "train": {k: getattr(settings, k) for k in ("seed", "learning_rate", "batch_size", "epochs", "patience",
                                                     "max_steps", "max_train_samples", "max_length", "select_metric")}
        | {"model": process["model"], "tasks": sorted(set(train_tasks))},  # what the model was taught (the ablations check it)
    }
    select = settings.select_metric
    ranking = RankingValidation.build(
        tokenizer, sid_map, valid_df, settings.valid_ranking_rows, settings.valid_num_beams, settings.max_length,
        settings.seed, max(len(tokenizer), model.config.vocab_size), source=str(process["valid_path"]),
        needed_for=None if select == "loss" else
        f"select_metric={select!r} cannot rank; use select_metric: loss or add semantic rows to sft_dataset_valid")
    return SFTRun(settings=settings, process=dict(process), dist=dist, model=model, ddp_model=ddp_model,
                  tokenizer=tokenizer, optimizer=optimizer, scheduler=scheduler, amp_dtype=amp_dtype,
                  train_examples=train_examples, valid_examples=valid_examples, train_tasks=train_tasks,
                  epoch_size=epoch_size, steps_per_epoch=steps_per_epoch, total_steps=total_steps, ranking=ranking,
                  meta=meta)


class StepBatches:
    """The samples of each optimizer step: epoch ``e``'s rows (:func:`epoch_rows`) in the epoch's
    order (:func:`epoch_order`), ``batch_size`` at a time; the current epoch's order is built once."""

    def __init__(self, run: SFTRun):
        self.run = run
        self.lengths = [len(ids) for ids, _ in run.train_examples]
        self.orders: dict[int, np.ndarray] = {}

    def __call__(self, step: int) -> np.ndarray:
        """The sample indices of step ``step`` (0-based), equal on every process."""
        settings = self.run.settings
        epoch, position = divmod(step, self.run.steps_per_epoch)
        if epoch not in self.orders:
            rows = epoch_rows(self.run.train_tasks, settings.task_fractions, settings.seed, epoch)
            self.orders = {epoch: rows[epoch_order([self.lengths[i] for i in rows], settings.seed, epoch,
                                                   settings.batch_size, settings.group_by_length)]}
        return self.orders[epoch][position * settings.batch_size : (position + 1) * settings.batch_size]


def train_step(run: SFTRun, global_batch: np.ndarray) -> tuple[float, int]:
    """One optimizer step on ``global_batch``, this process on its share; returns the batch's summed
    answer-token loss and its number of answer tokens, over all processes."""
    dist = run.dist
    local = [run.train_examples[i] for i in global_batch[dist.rank :: dist.world_size]]
    tokens_here = sum(sum(1 for x in labs[1:] if x != IGNORE_INDEX) for _, labs in local)
    (global_tokens,) = dist.all_reduce_sum([tokens_here])
    step_loss = 0.0
    # a rank without a sample of the last, small batch still joins the gradient all-reduce,
    # with one sample at weight 0
    weight = 1.0 if local else 0.0
    local = local or [run.train_examples[global_batch[0]]]
    chunks = micro_batches(local, run.settings.micro_batch_size)
    for index, chunk in enumerate(chunks):
        batch = {k: v.to(dist.device) for k, v in collate(chunk, run.pad_id).items()}
        sync = (index == len(chunks) - 1) or not dist.enabled
        context = run.ddp_model.no_sync() if not sync else torch.enable_grad()
        with context:
            with common.autocast(dist.device, run.amp_dtype):
                loss_sum, _ = answer_token_loss(run.ddp_model, batch)
            # DDP averages gradients over processes: scale so the result is the global token mean
            (weight * loss_sum * dist.world_size / max(global_tokens, 1)).backward()
        step_loss += weight * float(loss_sum.detach())
    torch.nn.utils.clip_grad_norm_([p for p in run.model.parameters() if p.requires_grad], 1.0)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    (step_loss_sum,) = dist.all_reduce_sum([step_loss])
    return step_loss_sum, global_tokens


def evaluate(run: SFTRun, state: dict[str, Any], clock: common.WallClock, at_step: int) -> float:
    """Valid loss and ranking at ``at_step``, added to the valid curve and logged; returns the value
    of ``select_metric``."""
    dist, settings = run.dist, run.settings
    t0 = time.time()
    valid_loss = (_validation_loss(run.model, run.valid_examples, settings.micro_batch_size, run.pad_id, dist,
                                   run.amp_dtype) if run.valid_examples else state["last_train_loss"])
    ranked = run.ranking.evaluate(run.model, dist, settings.micro_batch_size, run.amp_dtype) if run.ranking else {}
    state["eval_seconds"] += time.time() - t0
    point = {"step": at_step, "train_seconds": round(state["train_seconds"], 3),
             "train_cpu_seconds": round(state.get("train_cpu_seconds", 0.0), 3),
             "wall_seconds": round(clock.total(), 3), "train_loss": state["last_train_loss"],
             "valid_loss": valid_loss, **ranked}
    state["valid_losses"].append(valid_loss)
    state["valid_curve"].append(point)
    state["evaluated_at"] = at_step
    logger.info("step %d: train loss %.4f, valid loss %.4f%s", at_step, state["last_train_loss"], valid_loss,
                "".join(f", valid {k} {ranked[k]:.4f}" for k in ("HR@10", "NDCG@10") if k in ranked))
    if dist.is_main:
        tracking.log_metrics({"valid_loss": valid_loss, "epoch": at_step / run.steps_per_epoch,
                              **{f"valid_{k.replace('@', '_at_')}": v for k, v in ranked.items()}}, step=at_step)
    if state["best_valid_loss"] is None or valid_loss < state["best_valid_loss"]:
        state["best_valid_loss"] = valid_loss
    return valid_loss if settings.select_metric == "loss" else ranked[settings.select_metric]


def save_best(run: SFTRun, state: Mapping[str, Any]) -> None:
    """The model folder of the best evaluation, its meta's ``train`` with the trainer state."""
    checkpoints.save_best_folder(run.dist, run.model, run.tokenizer, {**run.meta, "train": {**run.meta["train"], **state}},
                                 run.checkpoint_dir / "best")


def checkpoint(run: SFTRun, step: int, state: dict[str, Any], clock: common.WallClock) -> None:
    state["wall_seconds"] = clock.total()
    checkpoints.save_checkpoint(run.dist, run.checkpoint_dir, step, run.model, run.optimizer, run.scheduler, state,
                                run.settings.keep_checkpoints)


def train(cfg: dict[str, Any]) -> dict[str, Any]:
    process, settings = split_config(cfg)
    clock = common.WallClock()
    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    modeling.check_model_config(process["model"])
    dist = common.init_distributed(settings.device)
    common.seed_everything(settings.seed)
    run = setup(process, settings, dist)
    total_steps, steps_per_epoch = run.total_steps, run.steps_per_epoch

    selector = BestModelSelector(settings.select_metric, settings.patience)
    state = {"best_valid_loss": None, **selector.state_dict(), "epochs_completed": 0, "samples_seen": 0,
             "train_seconds": 0.0, "eval_seconds": 0.0, "last_train_loss": None, "valid_losses": [], "valid_curve": [],
             "evaluated_at": None}
    step, resumed_from = 0, None
    last = common.latest_checkpoint(run.checkpoint_dir)
    if last is not None:
        restored = common.load_checkpoint(last, run.model, run.optimizer, run.scheduler, rank=dist.rank)  # this rank's RNG
        step, state = restored["step"], restored["trainer"]
        selector.load_state_dict(state)
        resumed_from = step
        logger.info("Resumed from %s (step %d)", last, step)
    clock.before = float(state.get("wall_seconds", 0.0))

    if dist.is_main:
        tracking.log_params({"sft": {"train_samples": len(run.train_examples), "epoch_samples": run.epoch_size,
                                     "valid_samples": len(run.valid_examples),
                                     "steps_per_epoch": steps_per_epoch, "total_steps": total_steps,
                                     "world_size": dist.world_size, "autocast": str(run.amp_dtype)}})
        if resumed_from is not None:  # a metric: a parameter could not change between attempts
            tracking.log_metrics({"resumed_from_step": resumed_from}, step=resumed_from)
    progress = tqdm(total=total_steps, initial=step, desc="sft", disable=not dist.is_main, file=sys.stdout,
                    mininterval=5 if sys.stdout.isatty() else 30)  # a piped log gets a line per update
    batches = StepBatches(run)
    while step < total_steps and not selector.should_stop:
        global_batch = batches(step)
        t0, cpu0 = time.time(), time.process_time()
        step_loss_sum, global_tokens = train_step(run, global_batch)
        step += 1
        elapsed = time.time() - t0
        state["samples_seen"] += len(global_batch)
        state["train_seconds"] += elapsed
        state["train_cpu_seconds"] = state.get("train_cpu_seconds", 0.0) + time.process_time() - cpu0
        state["last_train_loss"] = step_loss_sum / max(global_tokens, 1)
        progress.update(1)
        if dist.is_main and step % settings.log_every == 0:
            tracking.log_metrics({"train_loss": state["last_train_loss"], "lr": run.scheduler.get_last_lr()[0],
                                  "samples_per_s": len(global_batch) / max(elapsed, 1e-9)}, step=step)
        end_of_epoch = step % steps_per_epoch == 0 or step == total_steps
        if end_of_epoch or (settings.eval_every and step % settings.eval_every == 0):
            state["epochs_completed"] = math.ceil(step / steps_per_epoch)
            improved = selector.update(step, evaluate(run, state, clock, step))
            state.update(selector.state_dict())
            if improved:
                save_best(run, state)
        if end_of_epoch or state["evaluated_at"] == step or step % settings.checkpoint_every == 0 or step == total_steps:
            checkpoint(run, step, state, clock)
    progress.close()
    result = finish(run, state, selector, step, resumed_from, clock)
    common.close_distributed(dist)
    return result


def finish(run: SFTRun, state: dict[str, Any], selector: BestModelSelector, step: int, resumed_from: int | None,
           clock: common.WallClock) -> dict[str, Any]:
    """The run's result; rank 0 publishes the best model folder (its meta with the result) as
    ``output_dir`` and writes the result to ``result_path``."""
    dist, select = run.dist, run.settings.select_metric
    wall_s, attempt_wall_s = clock.split()
    result = {
        "model_dir": str(run.process["output_dir"]),
        "steps": step,
        "total_steps": run.total_steps,
        "epochs_completed": state["epochs_completed"],
        "best_valid_loss": state["best_valid_loss"],
        "select_metric": select,
        "best_metric": selector.best_metric,
        "best_step": selector.best_step,
        "eval_seconds": state["eval_seconds"],
        "valid_curve": state["valid_curve"],
        "final_train_loss": state["last_train_loss"],
        "samples_per_s": state["samples_seen"] / max(state["train_seconds"], 1e-9),
        "stopped_early": selector.should_stop,
        "resumed_from_step": resumed_from,
        "train_samples": len(run.train_examples),
        "epoch_samples": run.epoch_size,
        "valid_samples": len(run.valid_examples),
        "world_size": dist.world_size,
        "wall_s": wall_s,  # every attempt's, when resumed
        "attempt_wall_s": attempt_wall_s,
        **memory.peak_memory(dist),  # this attempt's peak, the largest over the processes
    }
    best = run.checkpoint_dir / "best"
    # rank 0 looks, every rank follows: save_best's barrier must be reached by all of them
    if dist.any(dist.is_main and not (best / modeling.META_FILE).is_file()):
        save_best(run, state)
    if dist.is_main:
        output = Path(run.process["output_dir"])
        checkpoints.publish_best(best, output, lambda meta: {**meta, "train": {**meta["train"], "result": result}})
        tracking.log_metrics({"final_train_loss": result["final_train_loss"] or 0.0,
                              "best_valid_loss": result["best_valid_loss"] or 0.0,
                              f"best_valid_{select.replace('@', '_at_')}": result["best_metric"] or 0.0,
                              "throughput_samples_per_s": result["samples_per_s"],
                              "peak_memory_mb": result["peak_memory_mb"]}, step=step)
        tracking.set_tags({"sft.model_dir": str(output.resolve()), "sft.peak_memory_kind": result["peak_memory_kind"]})
        if run.process.get("result_path"):
            Path(run.process["result_path"]).write_text(json.dumps(result, indent=1), encoding="utf-8")
    dist.barrier()
    return result


def main(argv: list[str] | None = None) -> None:
    common.run_entry_point(train, argv)


if __name__ == "__main__":
    main()
