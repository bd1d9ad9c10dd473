"""Our SFT loop against trl's SFTTrainer, side by side in one process, and the padding of our batching.

Same model (the environment's ``sft.model`` preset, built by ``modeling.build_model``), same
examples (``sft.encode_example``: prompt + answer + EOS, loss on the answer only, prompt start cut),
same batches (``sft.epoch_order`` + ``sft.micro_batches``, as the trainer draws them) and the same
optimiser (AdamW, cosine to 0 over the round without warmup, no weight decay, clip 1.0). trl is fed
the same micro-batches (a pre-tokenized dataset in step order, sequential sampler, gradient
accumulation), so both pad exactly alike and their step-1 losses must agree. trl runs with its
defaults (SFTConfig: bf16, gradient checkpointing) and without checkpointing, which our loop does
not do (``-nogc``: like with like).

Each round trains every variant for ``--steps`` optimizer steps on that round's batches, one variant
after the other (interleaved: all see the same load); a fresh optimizer and, for trl, a fresh
trainer each round. A step is timed from the end of the previous one (data collation included);
the first step of a round is warm-up and not counted. Prints the median over rounds of samples/s
(wall) and samples per CPU-second (this process), the pooled CPU figure of all rounds, and the
ratio ours / trl.

    python benchmarks/sft/bench_trl_sft.py --data-root data/demo --rounds 5 --steps 4
    python benchmarks/sft/bench_trl_sft.py --data-root data/industrial --env industrial --padding-only

``--padding-only`` prints tokens per sample and the padded share of the tokens over one epoch of
micro-batches, with ``group_by_length`` off and on, and stops.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from singer_rec import modeling
from singer_rec.settings import project_parameters
from singer_rec.training import common, sft

ROOT = Path(__file__).resolve().parents[2]


def latest_version(path: Path) -> Path:
    """A plain parquet file, or the newest version inside a Kedro versioned folder."""
    if path.is_file():
        return path
    versions = sorted(path.glob("*/" + path.name))
    if not versions:
        raise FileNotFoundError(f"{path}: neither a file nor a versioned folder with a version")
    return versions[-1]


def load_inputs(data_root: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(sft_dataset_train, items, item_sids) of a data root written by ``kedro run``."""
    rows = pd.read_parquet(data_root / "05_model_input" / "sft_dataset_train.parquet")
    items = pd.read_parquet(data_root / "02_intermediate" / "items.parquet")
    item_sids = pd.read_parquet(latest_version(data_root / "04_feature" / "item_sids.parquet"))
    return rows, items, item_sids


def step_chunks(examples: list, steps: range, batch_size: int, micro: int, seed: int,
                group_by_length: bool) -> list[list[list]]:
    """The micro-batches of optimizer ``steps`` of the first epoch, drawn as ``sft.train`` draws them."""
    order = sft.epoch_order([len(ids) for ids, _ in examples], seed, 0, batch_size, group_by_length)
    full_steps = len(order) // batch_size
    if steps.stop > full_steps:
        raise ValueError(f"{steps.stop} steps of {batch_size} asked for, the epoch has {full_steps} full ones")
    return [sft.micro_batches([examples[i] for i in order[s * batch_size : (s + 1) * batch_size]], micro)
            for s in steps]


def padding_stats(chunks_per_step: list[list[list]]) -> dict[str, float]:
    """Tokens per sample and the padded share of the tokens fed to the model (rows x width)."""
    real = padded = samples = 0
    for chunks in chunks_per_step:
        for chunk in chunks:
            lengths = [len(ids) for ids, _ in chunk]
            real += sum(lengths)
            padded += max(lengths) * len(lengths)
            samples += len(lengths)
    return {"tokens_per_sample": real / samples, "padded_tokens_per_sample": padded / samples,
            "padded_share": 1 - real / padded}


def run_ours(model, chunks_per_step, lr: float, amp_dtype, pad_id: int) -> tuple[list, list]:
    """The training step of ``sft.train`` (one process) over the given micro-batches; (clock marks, losses)."""
    optimizer, scheduler = common.optimizer_and_schedule(model, lr, 0.0, len(chunks_per_step), 0)
    device = torch.device("cpu")
    marks, losses = [(time.perf_counter(), time.process_time())], []
    for chunks in chunks_per_step:
        tokens = sum(sum(1 for x in labels[1:] if x != sft.IGNORE_INDEX) for chunk in chunks for _, labels in chunk)
        step_loss = 0.0
        for chunk in chunks:
            with common.autocast(device, amp_dtype):
                loss_sum, _ = sft.answer_token_loss(model, sft.collate(chunk, pad_id))
            (loss_sum / tokens).backward()
            step_loss += float(loss_sum.detach())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(step_loss / tokens)
        marks.append((time.perf_counter(), time.process_time()))
    return marks, losses


def run_trl(model, tokenizer, chunks_per_step, lr: float, bf16: bool, checkpointing: bool,
            out: str) -> tuple[list, list]:
    """trl's SFTTrainer over the same micro-batches (sequential sampler); (clock marks, logged losses).

    ``checkpointing``: trl's default gradient (activation) checkpointing, which recomputes the
    forward pass in the backward one; our loop does not checkpoint.
    """
    import datasets
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    class Clock(TrainerCallback):
        def __init__(self):
            self.marks = []

        def on_step_begin(self, args, state, control, **kwargs):
            if not self.marks:  # the first step is warm-up: its start only anchors the clock
                self.marks.append((time.perf_counter(), time.process_time()))

        def on_step_end(self, args, state, control, **kwargs):
            self.marks.append((time.perf_counter(), time.process_time()))

    flat = [example for chunks in chunks_per_step for chunk in chunks for example in chunk]
    micro = len(chunks_per_step[0][0])
    data = datasets.Dataset.from_dict({"input_ids": [ids for ids, _ in flat], "labels": [labs for _, labs in flat]})
    args = SFTConfig(
        output_dir=out, per_device_train_batch_size=micro, gradient_accumulation_steps=len(chunks_per_step[0]),
        max_steps=len(chunks_per_step), learning_rate=lr, lr_scheduler_type="cosine", warmup_steps=0,
        weight_decay=0.0, max_grad_norm=1.0, train_sampling_strategy="sequential", bf16=bf16, use_cpu=True,
        gradient_checkpointing=checkpointing,
        logging_steps=1, report_to="none", save_strategy="no", disable_tqdm=True, seed=0,
        dataset_kwargs={"skip_prepare_dataset": True}, max_length=None,
    )
    clock = Clock()
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer, callbacks=[clock])
    trainer.remove_callback(PrinterCallback)  # its log lines; the losses are read from the log history
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return clock.marks, losses


def rates(marks: list, samples_per_step: int) -> tuple[float, float]:
    """(samples/s wall, samples per CPU-second) over the steps after the first."""
    (w0, c0), (w1, c1) = marks[1], marks[-1]
    samples = samples_per_step * (len(marks) - 2)
    return samples / max(w1 - w0, 1e-9), samples / max(c1 - c0, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=ROOT / "data" / "demo")
    parser.add_argument("--env", default="local", help="conf environment of the model and batch settings")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per variant and round (>= 2)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dropout", type=float, default=0.0,
                        help="attention dropout of both models (0: the step losses are comparable)")
    parser.add_argument("--variants", default="ours-fp32,trl-fp32-nogc,ours-bf16,trl-bf16-nogc,trl-bf16",
                        help="of ours-fp32, ours-bf16, ours-bf16-grouped (group_by_length) and trl-fp32, "
                             "trl-bf16 (trl's defaults: gradient checkpointing), trl-fp32-nogc, trl-bf16-nogc (without)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="samples per optimizer step (default: the environment's sft.train.batch_size)")
    parser.add_argument("--padding-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import transformers
    import trl

    transformers.logging.set_verbosity_error()
    params = project_parameters(ROOT / "conf", args.env)
    train_settings = sft.SFTSettings.from_dict(params["sft"]["train"])
    seed = int(params.get("seed", train_settings.seed))
    model_cfg = copy.deepcopy(params["sft"]["model"])
    model_cfg["scratch"] = {**(model_cfg.get("scratch") or {}), "dropout": args.dropout}
    rows, items, item_sids = load_inputs(args.data_root)
    vocab = modeling.sid_vocabulary_for(item_sids["sid"])
    base, tokenizer = modeling.build_model(model_cfg, sft.tokenizer_corpus(items, params["prompts"]["templates"]),
                                           vocab, seed=seed)
    examples = [sft.encode_example(tokenizer, p, a, train_settings.max_length) for p, a in zip(rows["prompt"], rows["answer"])]
    batch, micro = args.batch_size or train_settings.batch_size, train_settings.micro_batch_size
    if batch % micro:
        sys.exit(f"batch size {batch} is not a multiple of micro_batch_size {micro}")
    epoch_steps = range(len(examples) // batch)
    print(f"data {args.data_root} ({len(examples)} rows), env {args.env}, model {model_cfg['preset']} "
          f"{json.dumps(model_cfg.get('scratch'))}, batch {batch}, micro-batch {micro}, max_length "
          f"{train_settings.max_length}, torch {torch.__version__}, transformers {transformers.__version__}, "
          f"trl {trl.__version__}, {args.threads} thread(s), load average {os.getloadavg()}", flush=True)
    print("| batching (one epoch, full batches) | tokens/sample | padded tokens/sample | padded share |")
    print("|---|---|---|---|")
    for grouped in (False, True):
        stats = padding_stats(step_chunks(examples, epoch_steps, batch, micro, seed, grouped))
        print(f"| micro-batches sorted in each batch{', group_by_length' if grouped else ''} | "
              f"{stats['tokens_per_sample']:.1f} | {stats['padded_tokens_per_sample']:.1f} | "
              f"{100 * stats['padded_share']:.1f}% |", flush=True)
    if args.padding_only:
        return
    if args.steps < 2 or args.rounds * args.steps > len(epoch_steps):
        sys.exit(f"--steps >= 2 and rounds x steps <= {len(epoch_steps)} (full batches in an epoch)")

    bf16 = torch.bfloat16 if common.cpu_supports_bf16() else None  # bf16 where this CPU has it natively
    variants = args.variants.split(",")
    models = {name: copy.deepcopy(base).train() for name in variants}
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    first_losses: dict[str, list[float]] = {}
    out = tempfile.mkdtemp(prefix="bench-trl-")
    for r in range(args.rounds):
        steps = range(r * args.steps, (r + 1) * args.steps)
        plain = step_chunks(examples, steps, batch, micro, seed, False)
        grouped = step_chunks(examples, steps, batch, micro, seed, True) if "ours-bf16-grouped" in variants else None
        for name in variants:
            if name == "ours-fp32":
                marks, losses = run_ours(models[name], plain, train_settings.learning_rate, None, tokenizer.pad_token_id)
            elif name == "ours-bf16":
                marks, losses = run_ours(models[name], plain, train_settings.learning_rate, bf16, tokenizer.pad_token_id)
            elif name == "ours-bf16-grouped":
                marks, losses = run_ours(models[name], grouped, train_settings.learning_rate, bf16, tokenizer.pad_token_id)
            elif name in ("trl-fp32", "trl-bf16", "trl-fp32-nogc", "trl-bf16-nogc"):
                marks, losses = run_trl(models[name], tokenizer, plain, train_settings.learning_rate, "bf16" in name,
                                        not name.endswith("-nogc"), out)
            else:
                sys.exit(f"unknown variant {name!r}")
            w, c = rates(marks, batch)
            wall[name].append(w)
            cpu[name].append(c)
            first_losses.setdefault(name, losses)
            print(f"round {r + 1} {name}: {w:.1f} samples/s, {c:.1f} samples/CPU-s, step losses "
                  f"{[round(x, 4) for x in losses]}, load {os.getloadavg()[0]:.2f}", flush=True)
    print(f"\nmedian of {args.rounds} rounds x {args.steps - 1} timed steps of {batch} samples; "
          f"load average at the end {os.getloadavg()}")
    print("| variant | samples/s (wall) | samples per CPU-second | pooled over rounds | round-1 step losses |")
    print("|---|---|---|---|---|")
    for name in variants:
        print(f"| {name} | {statistics.median(wall[name]):.1f} | {statistics.median(cpu[name]):.1f} | "
              f"{statistics.harmonic_mean(cpu[name]):.1f} | "
              f"{', '.join(f'{x:.4f}' for x in first_losses[name])} |")
    pairs = [("ours-fp32", "trl-fp32-nogc"), ("ours-bf16", "trl-bf16-nogc"), ("ours-fp32", "trl-fp32"),
             ("ours-bf16", "trl-bf16"), ("ours-bf16-grouped", "ours-bf16")]
    for ours, theirs in pairs:
        if ours in variants and theirs in variants:
            ratio = [a / b for a, b in zip(cpu[ours], cpu[theirs])]
            print(f"{ours} / {theirs}: {statistics.median(ratio):.2f}x per CPU-second (median of per-round ratios), "
                  f"{statistics.median(wall[ours]) / statistics.median(wall[theirs]):.2f}x wall")


if __name__ == "__main__":
    main()
