"""SFT entry point: ``python -m singer_rec.training.sft --config FILE`` (or under torchrun).

Trains a preset (``singer_rec.modeling``) on the task prompts with the loss on the answer tokens
only, AdamW + cosine, effective batch ``batch_size`` samples per optimizer step (gradient
accumulation over micro-batches and processes), early stopping on validation loss, checkpoints
every ``checkpoint_every`` steps and at every epoch end, and exact resume from the last one.
Writes the best model folder to ``output_dir`` and a result json to ``result_path``.

Config keys (all json): train_path, valid_path, items_path, item_sids_path (parquet), output_dir,
checkpoint_dir, result_path, model {preset, scratch|smollm2|hf, lora}, templates, seed, lr,
weight_decay, warmup_ratio, batch_size, micro_batch_size, epochs, patience, max_steps,
max_train_samples, max_valid_samples, max_length, autocast, checkpoint_every, keep_checkpoints,
log_every, device, num_threads, stop_after_steps (debug: exit abruptly after that many steps, as
a kill would).
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
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from singer_rec import modeling, tracking
from singer_rec.prompts import render_for_model
from singer_rec.training import common

logger = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "seed": 42,
    "lr": 3e-4,
    "weight_decay": 0.0,
    "warmup_ratio": 0.03,
    "batch_size": 128,
    "micro_batch_size": 16,
    "epochs": 10,
    "patience": 1,
    "max_steps": None,
    "max_train_samples": None,
    "max_valid_samples": None,
    "max_length": 256,
    "autocast": "auto",
    "checkpoint_every": 100,
    "keep_checkpoints": 2,
    "log_every": 1,
    "device": "auto",
    "num_threads": None,
    "stop_after_steps": None,
    "templates": {},
}
KILLED_EXIT_CODE = 75  # what stop_after_steps exits with (a simulated kill)
IGNORE_INDEX = -100
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
    """Summed cross-entropy over the label tokens (next-token shifted) and their count."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    shift_logits = logits[:, :-1, :].float()
    shift_labels = batch["labels"][:, 1:]
    loss = torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX, reduction="sum",
    )
    return loss, int((shift_labels != IGNORE_INDEX).sum())


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


def _read_table(path: str, columns: list[str]) -> pd.DataFrame:
    frame = pd.read_parquet(path)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    return frame


def _capped(frame: pd.DataFrame, cap: int | None, seed: int) -> pd.DataFrame:
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


def train(cfg: dict[str, Any]) -> dict[str, Any]:
    cfg = {**DEFAULTS, **cfg}
    started = time.time()
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg["num_threads"]))
    modeling.check_model_config(cfg["model"])
    dist = common.init_distributed(cfg["device"])
    common.seed_everything(cfg["seed"])

    train_df = _capped(_read_table(cfg["train_path"], ["task", "prompt", "answer"]), cfg["max_train_samples"], cfg["seed"])
    valid_df = _capped(_read_table(cfg["valid_path"], ["task", "prompt", "answer"]), cfg["max_valid_samples"], cfg["seed"])
    items = _read_table(cfg["items_path"], ["item_id", "title"])
    item_sids = _read_table(cfg["item_sids_path"], ["item_id", "sid"])
    sid_map = check_sids_against_catalog(item_sids, {"sft_dataset_train": train_df, "sft_dataset_valid": valid_df})
    if len(train_df) == 0:
        raise ValueError(f"{cfg['train_path']}: no training rows")

    tokenizer = _shared_tokenizer(cfg, dist, items)
    sid_vocab = modeling.sid_vocabulary_for(sid_map.values())
    model, tokenizer = modeling.build_model(cfg["model"], [], sid_vocab, seed=cfg["seed"], tokenizer=tokenizer)
    lora = (cfg["model"].get("lora") or {})
    if lora.get("enabled", False):
        model = modeling.apply_lora(model, lora, modeling.sid_token_ids(tokenizer, sid_vocab))
    model.to(dist.device).train()
    amp_dtype = common.autocast_dtype(dist.device, cfg["autocast"])

    pad_id = tokenizer.pad_token_id
    encode = lambda df: [encode_example(tokenizer, p, a, cfg["max_length"]) for p, a in zip(df["prompt"], df["answer"])]  # noqa: E731
    train_examples, valid_examples = encode(train_df), encode(valid_df)

    batch_size, micro = int(cfg["batch_size"]), int(cfg["micro_batch_size"])
    steps_per_epoch = math.ceil(len(train_examples) / batch_size)
    total_steps = steps_per_epoch * int(cfg["epochs"])
    if cfg["max_steps"]:
        total_steps = min(total_steps, int(cfg["max_steps"]))
    optimizer, scheduler = common.optimizer_and_schedule(
        model, cfg["lr"], cfg["weight_decay"], total_steps, int(cfg["warmup_ratio"] * total_steps))

    ddp_model = model
    if dist.enabled:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dist.local_rank] if dist.device.type == "cuda" else None)

    state = {"best_valid_loss": None, "bad_epochs": 0, "stopped_early": False, "epochs_completed": 0,
             "samples_seen": 0, "train_seconds": 0.0, "last_train_loss": None, "valid_losses": []}
    step, resumed_from = 0, None
    ckpt_dir = Path(cfg["checkpoint_dir"])
    last = common.latest_checkpoint(ckpt_dir)
    if last is not None:
        restored = common.load_checkpoint(last, model, optimizer, scheduler)
        step, state = restored["step"], restored["trainer"]
        resumed_from = step
        logger.info("Resumed from %s (step %d)", last, step)

    meta = {
        "preset": cfg["model"]["preset"],
        "sid_map": sid_map,
        "titles": dict(zip(items["item_id"].astype(str), items["title"].astype(str))),
        "templates": cfg["templates"],
        "train": {k: cfg[k] for k in ("seed", "lr", "batch_size", "epochs", "patience", "max_steps",
                                       "max_train_samples", "max_length") } | {"model": cfg["model"]},
    }

    def save_best():
        if dist.is_main:
            modeling.save_model_folder(model, tokenizer, {**meta, "train": {**meta["train"], **state}}, ckpt_dir / "best")
        dist.barrier()

    def checkpoint():
        if dist.is_main:
            common.save_checkpoint(ckpt_dir, step, model, optimizer, scheduler, state, keep=int(cfg["keep_checkpoints"]))
        dist.barrier()

    if dist.is_main:
        tracking.log_params({"sft": {"train_samples": len(train_examples), "valid_samples": len(valid_examples),
                                     "steps_per_epoch": steps_per_epoch, "total_steps": total_steps,
                                     "world_size": dist.world_size, "autocast": str(amp_dtype)}})
        if resumed_from is not None:  # a metric: a parameter could not change between attempts
            tracking.log_metrics({"resumed_from_step": resumed_from}, step=resumed_from)
    progress = tqdm(total=total_steps, initial=step, desc="sft", disable=not dist.is_main, file=sys.stdout,
                    mininterval=5 if sys.stdout.isatty() else 30)  # a piped log gets a line per update
    while step < total_steps and not state["stopped_early"]:
        epoch, position = divmod(step, steps_per_epoch)
        order = np.random.default_rng(cfg["seed"] + epoch).permutation(len(train_examples))
        global_batch = order[position * batch_size : (position + 1) * batch_size]
        local = [train_examples[i] for i in global_batch[dist.rank :: dist.world_size]]
        tokens_here = sum(sum(1 for x in labs[1:] if x != IGNORE_INDEX) for _, labs in local)
        (global_tokens,) = dist.all_reduce_sum([tokens_here])
        t0 = time.time()
        step_loss = 0.0
        # a rank without a sample of the last, small batch still joins the gradient all-reduce,
        # with one sample at weight 0
        weight = 1.0 if local else 0.0
        local = local or [train_examples[global_batch[0]]]
        # micro-batches of similar length pad less; the step's gradient (a sum) is unchanged
        local.sort(key=lambda example: len(example[0]))
        chunks = [local[i : i + micro] for i in range(0, len(local), micro)]
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
        state["last_train_loss"] = step_loss_sum / max(global_tokens, 1)
        progress.update(1)
        if dist.is_main and step % int(cfg["log_every"]) == 0:
            tracking.log_metrics({"train_loss": state["last_train_loss"], "lr": scheduler.get_last_lr()[0],
                                  "samples_per_s": len(global_batch) / max(elapsed, 1e-9)}, step=step)
        end_of_epoch = step % steps_per_epoch == 0 or step == total_steps
        if end_of_epoch:
            valid_loss = _validation_loss(model, valid_examples, micro, pad_id, dist, amp_dtype) if valid_examples else state["last_train_loss"]
            state["epochs_completed"] = math.ceil(step / steps_per_epoch)
            state["valid_losses"].append(valid_loss)
            logger.info("step %d epoch %d: train loss %.4f, valid loss %.4f", step, state["epochs_completed"],
                        state["last_train_loss"], valid_loss)
            if dist.is_main:
                tracking.log_metrics({"valid_loss": valid_loss, "epoch": state["epochs_completed"]}, step=step)
            if state["best_valid_loss"] is None or valid_loss < state["best_valid_loss"]:
                state["best_valid_loss"], state["bad_epochs"] = valid_loss, 0
                save_best()
            else:
                state["bad_epochs"] += 1
                state["stopped_early"] = state["bad_epochs"] >= int(cfg["patience"])
        if end_of_epoch or step % int(cfg["checkpoint_every"]) == 0 or step == total_steps:
            checkpoint()
        if cfg["stop_after_steps"] and step >= int(cfg["stop_after_steps"]):
            logger.warning("stop_after_steps=%s reached: exiting abruptly (debug)", cfg["stop_after_steps"])
            sys.stdout.flush()
            os._exit(KILLED_EXIT_CODE)
    progress.close()

    result = {
        "model_dir": str(cfg["output_dir"]),
        "steps": step,
        "total_steps": total_steps,
        "epochs_completed": state["epochs_completed"],
        "best_valid_loss": state["best_valid_loss"],
        "final_train_loss": state["last_train_loss"],
        "samples_per_s": state["samples_seen"] / max(state["train_seconds"], 1e-9),
        "stopped_early": state["stopped_early"],
        "resumed_from_step": resumed_from,
        "train_samples": len(train_examples),
        "valid_samples": len(valid_examples),
        "world_size": dist.world_size,
        "wall_s": time.time() - started,
    }
    if dist.is_main:
        best = ckpt_dir / "best"
        output = Path(cfg["output_dir"])
        if not (best / modeling.META_FILE).is_file():
            save_best()
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
                              "throughput_samples_per_s": result["samples_per_s"]}, step=step)
        tracking.set_tags({"sft.model_dir": str(output.resolve())})
        if cfg.get("result_path"):
            Path(cfg["result_path"]).write_text(json.dumps(result, indent=1), encoding="utf-8")
    dist.barrier()
    common.close_distributed(dist)
    return result


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    train(common.read_config(argv))


if __name__ == "__main__":
    main()
