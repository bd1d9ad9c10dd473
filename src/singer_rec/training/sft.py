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
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from singer_rec import decoding, modeling, tracking
from singer_rec.metrics import METRIC_NAMES, SELECTION_METRICS, hit_rank, metrics_from_ranks
from singer_rec.prompts import render_for_model
from singer_rec.training import common, memory

logger = logging.getLogger(__name__)

PROCESS_KEYS = ("train_path", "valid_path", "items_path", "item_sids_path", "output_dir", "checkpoint_dir",
                "result_path", "model", "templates")
SELECT_METRICS = SELECTION_METRICS


@dataclass
class SFTSettings:
    """The ``sft.train`` parameters (``parameters_sft.yml``); unknown keys are rejected."""

    RENAMED_KEYS: ClassVar[dict[str, str]] = {"lr": "learning_rate"}  # trl's name, as in rl.settings
    seed: int = 42
    learning_rate: float = 3e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    batch_size: int = 128               # samples per optimizer step (over micro-batches and processes)
    micro_batch_size: int = 16          # samples per forward pass
    epochs: int = 10
    patience: int = 1                   # evaluations without a better select_metric before stopping
    max_steps: int | None = None        # cap on optimizer steps (null: epochs decide)
    max_train_samples: int | None = None
    max_valid_samples: int | None = None  # valid rows for the valid loss (seeded sample)
    max_length: int = 256               # tokens; long prompts lose their start, never the answer
    group_by_length: bool = False       # batches of similar length (shuffled mega-batches, as HF's sampler)
    task_fractions: dict[str, float] | None = None  # share of a task's rows per epoch, e.g. {sid_to_title: 0.5}
    select_metric: str = "NDCG@10"      # loss | HR@K | NDCG@K (K in 3, 5, 10) on the valid ranking sample
    valid_ranking_rows: int | None = 256  # valid rows ranked at each evaluation (seeded sample; null: all)
    valid_num_beams: int = 20           # beam width of that ranking (>= 10)
    eval_every: int | None = None       # also evaluate every N steps (null: at epoch ends only)
    autocast: str = "auto"              # auto | bf16 | off
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 1
    device: str = "auto"                # auto | cpu | cuda
    num_threads: int | None = None      # torch threads in the training process (null: torch default)
    gradient_checkpointing: bool = False  # recompute layer activations in the backward: less memory, more compute

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None, where: str = "sft.train") -> SFTSettings:
        """Settings from a mapping; names the unknown key, the wrong type or the out-of-range value."""
        from singer_rec.params import from_params

        return from_params(cls, values, where)  # types, then ``check``

    def check(self, where: str = "sft.train") -> None:
        for name in ("batch_size", "micro_batch_size", "epochs", "patience", "max_length", "checkpoint_every",
                     "keep_checkpoints", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{where}.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_steps", "max_train_samples", "max_valid_samples", "valid_ranking_rows", "eval_every",
                     "num_threads"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{where}.{name} must be >= 1 or null, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ValueError(f"{where}.learning_rate must be > 0, got {self.learning_rate}")
        if self.weight_decay < 0 or not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"{where}: weight_decay must be >= 0 and warmup_ratio in [0, 1), got "
                             f"{self.weight_decay} and {self.warmup_ratio}")
        if self.select_metric not in SELECT_METRICS:
            raise ValueError(f"{where}.select_metric {self.select_metric!r}; allowed: {list(SELECT_METRICS)}")
        if self.valid_num_beams < 10:
            raise ValueError(f"{where}.valid_num_beams must be >= 10 (the largest K), got {self.valid_num_beams}")
        if self.autocast not in ("auto", "bf16", "off"):
            raise ValueError(f"{where}.autocast {self.autocast!r}; allowed: ['auto', 'bf16', 'off']")
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


def read_table(path: str, columns: list[str]) -> pd.DataFrame:
    """A parquet file that must hold ``columns`` (the error names the file and the missing ones)."""
    frame = pd.read_parquet(path)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    return frame


def seeded_sample(frame: pd.DataFrame, cap: int | None, seed: int) -> pd.DataFrame:
    """At most ``cap`` rows of ``frame`` (all when ``cap`` is None), a seeded sample kept in file order."""
    if cap is None or len(frame) <= cap:
        return frame.reset_index(drop=True)
    order = np.random.default_rng(seed).permutation(len(frame))[:cap]
    return frame.iloc[np.sort(order)].reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------
def _shared_tokenizer(cfg, dist: common.Dist, items: pd.DataFrame):
    """Build the tokenizer once (rank 0), store it with the checkpoints, load it everywhere."""
    from transformers import AutoTokenizer

    folder = Path(cfg["checkpoint_dir"]) / "tokenizer"
    if dist.is_main and not (folder / "tokenizer_config.json").is_file():
        sid_vocab = modeling.sid_vocabulary_for(pd.read_parquet(cfg["item_sids_path"])["sid"])
        tokenizer = modeling.base_tokenizer(cfg["model"], tokenizer_corpus(items, cfg["templates"]))
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
class RankingValidation:
    """A fixed, seeded sample of valid rows whose answer is an item's SID, ranked by constrained beam search."""

    prompts: list[list[int]]
    targets: list[int]            # index of the answer in ``trie``'s item order
    trie: decoding.PrefixTrie
    num_beams: int
    pad_id: int

    @classmethod
    def build(cls, tokenizer, sid_map: Mapping[str, str], valid_df: pd.DataFrame, rows: int | None, num_beams: int,
              max_length: int, seed: int, vocab_size: int, needed_for: str | None = None,
              source: str = "valid rows") -> RankingValidation | None:
        """``None`` when no row of ``valid_df`` answers with an item's SID, unless ``needed_for`` names what
        needs the ranking: then a ``ValueError`` naming ``source`` (the rows' file) and that need."""
        from singer_rec.sid.tokens import sid_tokens

        sids = sorted(set(sid_map.values()))
        sequences = [modeling.sid_token_ids(tokenizer, sid_tokens(sid)) for sid in sids]
        position = {sid: i for i, sid in enumerate(sids)}
        frame = valid_df[valid_df["answer"].isin(position)]
        frame = seeded_sample(frame, rows, seed)
        if len(frame) == 0:
            if needed_for is not None:
                raise ValueError(f"{source}: no valid row answers with an item's SID: {needed_for}")
            return None
        depth = max(len(x) for x in sequences)
        prompts = [tokenizer.encode(render_for_model(p), add_special_tokens=False)[-(max_length - depth - 1):]
                   for p in frame["prompt"]]
        return cls(prompts, [position[a] for a in frame["answer"]], decoding.PrefixTrie.build(sequences, vocab_size),
                   min(num_beams, len(sequences)), pad_id=tokenizer.pad_token_id)

    def ranks(self, model, dist: common.Dist, batch_size: int, amp_dtype) -> list[int | None]:
        """The target's 1-based rank (None: not among the beams) per row of this process's share,
        the model in eval mode."""
        mine = list(range(dist.rank, len(self.prompts), dist.world_size))
        if not mine:
            return []
        model.eval()
        with torch.no_grad():
            ranked = decoding.beam_search(model, [self.prompts[i] for i in mine], self.trie, num_beams=self.num_beams,
                                          batch_size=batch_size, pad_token_id=self.pad_id, autocast_dtype=amp_dtype).items
        return [hit_rank(r, self.targets[i]) for r, i in zip(ranked, mine)]

    def metric_sums(self, model, dist: common.Dist, batch_size: int, amp_dtype) -> dict[str, float]:
        """HR/NDCG@K summed over this process's share of the rows (``n`` = rows)."""
        ranks = self.ranks(model, dist, batch_size, amp_dtype)
        if not ranks:
            return {"n": 0.0}
        model.train()
        return self.sums(ranks)

    @staticmethod
    def sums(ranks: Sequence[int | None]) -> dict[str, float]:
        """HR/NDCG@K of ``ranks`` times their number (``n``)."""
        metrics = metrics_from_ranks(ranks)
        return {k: v * metrics["n"] for k, v in metrics.items() if k != "n"} | {"n": float(metrics["n"])}

    def evaluate(self, model, dist: common.Dist, batch_size: int, amp_dtype) -> dict[str, float]:
        """HR/NDCG@K over all rows: each process ranks its share, the ranks are gathered in row order
        and every process computes the metrics of the whole list, exactly as one process does."""
        ranks = dist.gather_shards(len(self.prompts), self.ranks(model, dist, batch_size, amp_dtype))
        model.train()
        totals = self.sums(ranks) if ranks else {"n": 0.0}
        return {name: totals.get(name, 0.0) / max(totals["n"], 1.0) for name in METRIC_NAMES}


def is_better(metric: str, value: float, best: float | None) -> bool:
    """Loss: lower is better; ranking metrics: higher. The first evaluation always counts."""
    if best is None:
        return True
    return value < best if metric == "loss" else value > best


def train(cfg: dict[str, Any]) -> dict[str, Any]:
    process, settings = split_config(cfg)
    cfg = {**asdict(settings), **process}
    clock = common.WallClock()
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg["num_threads"]))
    modeling.check_model_config(cfg["model"])
    dist = common.init_distributed(cfg["device"])
    common.seed_everything(cfg["seed"])

    train_df = seeded_sample(read_table(cfg["train_path"], ["task", "prompt", "answer"]), cfg["max_train_samples"], cfg["seed"])
    valid_df = seeded_sample(read_table(cfg["valid_path"], ["task", "prompt", "answer"]), cfg["max_valid_samples"], cfg["seed"])
    items = read_table(cfg["items_path"], ["item_id", "title"])
    item_sids = read_table(cfg["item_sids_path"], ["item_id", "sid"])
    sid_map = check_sids_against_catalog(item_sids, {"sft_dataset_train": train_df, "sft_dataset_valid": valid_df})
    if len(train_df) == 0:
        raise ValueError(f"{cfg['train_path']}: no training rows")

    tokenizer = _shared_tokenizer(cfg, dist, items)
    sid_vocab = modeling.sid_vocabulary_for(sid_map.values())
    model, tokenizer = modeling.build_model(cfg["model"], [], sid_vocab, seed=cfg["seed"], tokenizer=tokenizer)
    lora = (cfg["model"].get("lora") or {})
    if lora.get("enabled", False):
        model = modeling.apply_lora(model, lora, modeling.sid_token_ids(tokenizer, sid_vocab))
    if cfg["gradient_checkpointing"]:
        memory.enable_gradient_checkpointing(model)
    model.to(dist.device).train()
    amp_dtype = common.autocast_dtype(dist.device, cfg["autocast"])

    pad_id = tokenizer.pad_token_id
    def encode(df: pd.DataFrame) -> list[tuple[list[int], list[int]]]:
        """Every row's example; under DDP each rank encodes its share and the shares are gathered."""
        prompts, answers = df["prompt"].tolist(), df["answer"].tolist()
        mine = [encode_example(tokenizer, prompts[i], answers[i], cfg["max_length"]) for i in dist.shard(len(df))]
        return dist.gather_shards(len(df), mine)

    train_examples, valid_examples = encode(train_df), encode(valid_df)

    batch_size, micro = int(cfg["batch_size"]), int(cfg["micro_batch_size"])
    train_tasks = train_df["task"].astype(str).tolist()
    epoch_size = len(epoch_rows(train_tasks, cfg["task_fractions"], cfg["seed"], 0))
    steps_per_epoch = math.ceil(epoch_size / batch_size)
    total_steps = steps_per_epoch * int(cfg["epochs"])
    if cfg["max_steps"]:
        total_steps = min(total_steps, int(cfg["max_steps"]))
    optimizer, scheduler = common.optimizer_and_schedule(
        model, cfg["learning_rate"], cfg["weight_decay"], total_steps, int(cfg["warmup_ratio"] * total_steps))

    ddp_model = model
    if dist.enabled:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dist.local_rank] if dist.device.type == "cuda" else None)
    # the init and the data order are equal on every rank; dropout masks now differ (rank 0 as before)
    common.seed_rank_streams(int(cfg["seed"]), dist)

    state = {"best_valid_loss": None, "best_metric": None, "best_step": None, "bad_evals": 0, "stopped_early": False,
             "epochs_completed": 0, "samples_seen": 0, "train_seconds": 0.0, "eval_seconds": 0.0,
             "last_train_loss": None, "valid_losses": [], "valid_curve": [], "evaluated_at": None}
    step, resumed_from = 0, None
    ckpt_dir = Path(cfg["checkpoint_dir"])
    last = common.latest_checkpoint(ckpt_dir)
    if last is not None:
        restored = common.load_checkpoint(last, model, optimizer, scheduler, rank=dist.rank)  # this rank's RNG
        step, state = restored["step"], restored["trainer"]
        resumed_from = step
        logger.info("Resumed from %s (step %d)", last, step)
    clock.before = float(state.get("wall_seconds", 0.0))

    meta = {
        "preset": cfg["model"]["preset"],
        "sid_map": sid_map,
        "titles": dict(zip(items["item_id"].astype(str), items["title"].astype(str))),
        "templates": cfg["templates"],
        "train": {k: cfg[k] for k in ("seed", "learning_rate", "batch_size", "epochs", "patience", "max_steps",
                                       "max_train_samples", "max_length", "select_metric")}
        | {"model": cfg["model"], "tasks": sorted(set(train_tasks))},  # what the model was taught (the ablations check it)
    }

    def save_best():
        if dist.is_main:
            modeling.save_model_folder(model, tokenizer, {**meta, "train": {**meta["train"], **state}}, ckpt_dir / "best")
        dist.barrier()

    def checkpoint():
        state["wall_seconds"] = clock.total()
        rng = common.rng_states(dist)  # every rank's, gathered on all of them
        if dist.is_main:
            common.save_checkpoint(ckpt_dir, step, model, optimizer, scheduler, state, keep=int(cfg["keep_checkpoints"]),
                                   rng=rng)
        dist.barrier()

    select = cfg["select_metric"]
    ranking = RankingValidation.build(
        tokenizer, sid_map, valid_df, cfg["valid_ranking_rows"], int(cfg["valid_num_beams"]), int(cfg["max_length"]),
        int(cfg["seed"]), max(len(tokenizer), model.config.vocab_size), source=str(cfg["valid_path"]),
        needed_for=None if select == "loss" else
        f"select_metric={select!r} cannot rank; use select_metric: loss or add semantic rows to sft_dataset_valid")

    def evaluate_and_select(at_step: int) -> None:
        """Valid loss and ranking at ``at_step``; keeps the best model by ``select_metric``; early stopping."""
        t0 = time.time()
        valid_loss = (_validation_loss(model, valid_examples, micro, pad_id, dist, amp_dtype) if valid_examples
                      else state["last_train_loss"])
        ranked = ranking.evaluate(model, dist, micro, amp_dtype) if ranking is not None else {}
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
            tracking.log_metrics({"valid_loss": valid_loss, "epoch": at_step / steps_per_epoch,
                                  **{f"valid_{k.replace('@', '_at_')}": v for k, v in ranked.items()}}, step=at_step)
        value = valid_loss if select == "loss" else ranked[select]
        if state["best_valid_loss"] is None or valid_loss < state["best_valid_loss"]:
            state["best_valid_loss"] = valid_loss
        if is_better(select, value, state["best_metric"]):
            state["best_metric"], state["best_step"], state["bad_evals"] = value, at_step, 0
            save_best()
        else:
            state["bad_evals"] += 1
            state["stopped_early"] = state["bad_evals"] >= int(cfg["patience"])

    if dist.is_main:
        tracking.log_params({"sft": {"train_samples": len(train_examples), "epoch_samples": epoch_size,
                                     "valid_samples": len(valid_examples),
                                     "steps_per_epoch": steps_per_epoch, "total_steps": total_steps,
                                     "world_size": dist.world_size, "autocast": str(amp_dtype)}})
        if resumed_from is not None:  # a metric: a parameter could not change between attempts
            tracking.log_metrics({"resumed_from_step": resumed_from}, step=resumed_from)
    progress = tqdm(total=total_steps, initial=step, desc="sft", disable=not dist.is_main, file=sys.stdout,
                    mininterval=5 if sys.stdout.isatty() else 30)  # a piped log gets a line per update
    train_lengths = [len(ids) for ids, _ in train_examples]
    epoch_orders: dict[int, np.ndarray] = {}  # this epoch's order, built once
    while step < total_steps and not state["stopped_early"]:
        epoch, position = divmod(step, steps_per_epoch)
        if epoch not in epoch_orders:
            rows = epoch_rows(train_tasks, cfg["task_fractions"], cfg["seed"], epoch)
            epoch_orders = {epoch: rows[epoch_order([train_lengths[i] for i in rows], cfg["seed"], epoch, batch_size,
                                                    cfg["group_by_length"])]}
        order = epoch_orders[epoch]
        global_batch = order[position * batch_size : (position + 1) * batch_size]
        local = [train_examples[i] for i in global_batch[dist.rank :: dist.world_size]]
        tokens_here = sum(sum(1 for x in labs[1:] if x != IGNORE_INDEX) for _, labs in local)
        (global_tokens,) = dist.all_reduce_sum([tokens_here])
        t0, cpu0 = time.time(), time.process_time()
        step_loss = 0.0
        # a rank without a sample of the last, small batch still joins the gradient all-reduce,
        # with one sample at weight 0
        weight = 1.0 if local else 0.0
        local = local or [train_examples[global_batch[0]]]
        chunks = micro_batches(local, micro)
        for index, chunk in enumerate(chunks):
            batch = {k: v.to(dist.device) for k, v in collate(chunk, pad_id).items()}
            sync = (index == len(chunks) - 1) or not dist.enabled
            context = ddp_model.no_sync() if not sync else torch.enable_grad()
            with context:
                with common.autocast(dist.device, amp_dtype):
                    loss_sum, _ = answer_token_loss(ddp_model, batch)
                # DDP averages gradients over processes: scale so the result is the global token mean
                (weight * loss_sum * dist.world_size / max(global_tokens, 1)).backward()
            step_loss += weight * float(loss_sum.detach())
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        (step_loss_sum,) = dist.all_reduce_sum([step_loss])
        elapsed = time.time() - t0
        state["samples_seen"] += len(global_batch)
        state["train_seconds"] += elapsed
        state["train_cpu_seconds"] = state.get("train_cpu_seconds", 0.0) + time.process_time() - cpu0
        state["last_train_loss"] = step_loss_sum / max(global_tokens, 1)
        progress.update(1)
        if dist.is_main and step % int(cfg["log_every"]) == 0:
            tracking.log_metrics({"train_loss": state["last_train_loss"], "lr": scheduler.get_last_lr()[0],
                                  "samples_per_s": len(global_batch) / max(elapsed, 1e-9)}, step=step)
        end_of_epoch = step % steps_per_epoch == 0 or step == total_steps
        if end_of_epoch or (cfg["eval_every"] and step % int(cfg["eval_every"]) == 0):
            state["epochs_completed"] = math.ceil(step / steps_per_epoch)
            evaluate_and_select(step)
        if end_of_epoch or state["evaluated_at"] == step or step % int(cfg["checkpoint_every"]) == 0 or step == total_steps:
            checkpoint()
    progress.close()

    wall_s, attempt_wall_s = clock.split()
    result = {
        "model_dir": str(cfg["output_dir"]),
        "steps": step,
        "total_steps": total_steps,
        "epochs_completed": state["epochs_completed"],
        "best_valid_loss": state["best_valid_loss"],
        "select_metric": select,
        "best_metric": state["best_metric"],
        "best_step": state["best_step"],
        "eval_seconds": state["eval_seconds"],
        "valid_curve": state["valid_curve"],
        "final_train_loss": state["last_train_loss"],
        "samples_per_s": state["samples_seen"] / max(state["train_seconds"], 1e-9),
        "stopped_early": state["stopped_early"],
        "resumed_from_step": resumed_from,
        "train_samples": len(train_examples),
        "epoch_samples": epoch_size,
        "valid_samples": len(valid_examples),
        "world_size": dist.world_size,
        "wall_s": wall_s,  # every attempt's, when resumed
        "attempt_wall_s": attempt_wall_s,
        **memory.peak_memory(dist),  # this attempt's peak, the largest over the processes
    }
    best = ckpt_dir / "best"
    # rank 0 looks, every rank follows: save_best's barrier must be reached by all of them
    if dist.any(dist.is_main and not (best / modeling.META_FILE).is_file()):
        save_best()
    if dist.is_main:
        output = Path(cfg["output_dir"])
        final_meta = modeling.read_meta(best)
        final_meta["train"] = {**final_meta["train"], "result": result}
        (best / modeling.META_FILE).write_text(json.dumps(final_meta, indent=1, ensure_ascii=False), encoding="utf-8")
        output.parent.mkdir(parents=True, exist_ok=True)
        staging = output.with_name(f".{output.name}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(best, staging)
        modeling.replace_folder_atomically(staging, output)
        tracking.log_metrics({"final_train_loss": result["final_train_loss"] or 0.0,
                              "best_valid_loss": result["best_valid_loss"] or 0.0,
                              f"best_valid_{select.replace('@', '_at_')}": result["best_metric"] or 0.0,
                              "throughput_samples_per_s": result["samples_per_s"],
                              "peak_memory_mb": result["peak_memory_mb"]}, step=step)
        tracking.set_tags({"sft.model_dir": str(output.resolve()), "sft.peak_memory_kind": result["peak_memory_kind"]})
        if cfg.get("result_path"):
            Path(cfg["result_path"]).write_text(json.dumps(result, indent=1), encoding="utf-8")
    dist.barrier()
    common.close_distributed(dist)
    return result


def main(argv: list[str] | None = None) -> None:
    common.run_entry_point(train, argv)


if __name__ == "__main__":
    main()
