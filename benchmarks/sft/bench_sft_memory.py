"""SFT step time and peak memory at Qwen2.5's 152k vocabulary: the loss over full logits (before)
against logits at answer positions only (``sft.answer_token_loss``), and with gradient checkpointing.

A shallow Qwen2.5-0.5B-shaped model (the 0.5b's hidden size, heads and 151,936 tied vocabulary rows,
``--layers`` decoder layers instead of 24, random weights) through the ``hf`` preset; one step =
forward + backward of one micro-batch of ``--micro`` rows of ``--length`` tokens (right-padded, the
last 5-10 tokens of each row are the answer + EOS, as for a SID answer; timed), then gradient
clipping and an AdamW step (timed apart: a real step of 128 samples runs it once per 8 micro-batches).
Every variant runs in a fresh process (peak RSS is per process): one warm-up step, then
the median wall and CPU times of ``--steps`` steps, the peak RSS, and the peak's increase over the
resident size before the first step. The load average is read before and after each variant.

    python benchmarks/sft/bench_sft_memory.py --steps 3
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {  # name: (loss over all logits, gradient checkpointing)
    "full logits (before)": (True, False),
    "answer positions only (after)": (False, False),
    "answer positions + gradient checkpointing": (False, True),
}
SIDS = ["<a_0>", "<a_1>", "<b_0>", "<b_1>", "<c_0>", "<c_1>"]


def full_logits_loss(model, batch):
    """The loss as ``answer_token_loss`` computed it before: logits at every position, masked."""
    import torch

    from singer_rec.training import sft

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                             ignore_index=sft.IGNORE_INDEX, reduction="sum")
    return loss, int((labels != sft.IGNORE_INDEX).sum())


def resident_mb() -> float:
    """This process's resident set size now (Linux)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def synthetic_batch(tokenizer, micro: int, length: int, seed: int):
    """``micro`` right-padded rows of ``length - 4 .. length`` tokens whose last 5-10 are the answer + EOS."""
    import numpy as np

    from singer_rec.training import sft

    rng = np.random.default_rng(seed)
    examples = []
    for _ in range(micro):
        total, answer = int(rng.integers(length - 4, length + 1)), int(rng.integers(4, 10))
        ids = rng.integers(0, len(tokenizer) - len(SIDS) - 30, total).tolist()
        ids[-1] = tokenizer.eos_token_id
        prompt = total - answer - 1
        examples.append((ids, [sft.IGNORE_INDEX] * prompt + ids[prompt:]))
    return sft.collate(examples, tokenizer.pad_token_id)


def child(args) -> None:
    """One variant in this process: prints a json line of its timings and memory."""
    import torch

    from singer_rec import modeling
    from singer_rec.training import memory, sft

    torch.set_num_threads(args.threads)
    full, checkpointing = VARIANTS[args.variant]
    model, tokenizer = modeling.build_model({"preset": "hf", "hf": {"path": args.folder}}, [], SIDS)
    if checkpointing:
        memory.enable_gradient_checkpointing(model)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    loss_fn = full_logits_loss if full else sft.answer_token_loss
    batches = [synthetic_batch(tokenizer, args.micro, args.length, seed) for seed in range(args.steps + 1)]
    before_mb = resident_mb()
    wall, cpu, optimizer_wall, losses = [], [], [], []
    for batch in batches:
        t0, c0 = time.perf_counter(), time.process_time()
        loss, count = loss_fn(model, batch)
        (loss / count).backward()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        t0 = time.perf_counter()  # once per optimizer step: 8 micro-batches of 16 at batch_size 128
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        optimizer_wall.append(time.perf_counter() - t0)
        losses.append(float(loss) / count)
    peak_mb, kind = memory.local_peak_memory_mb(torch.device("cpu"))
    print(json.dumps({"wall_s": statistics.median(wall[1:]), "cpu_s": statistics.median(cpu[1:]),
                      "optimizer_wall_s": statistics.median(optimizer_wall[1:]),
                      "peak_mb": peak_mb, "kind": kind, "step_increase_mb": peak_mb - before_mb,
                      "first_loss": losses[0], "tokens": int(batches[0]["attention_mask"].sum()),
                      "answer_tokens": int((batches[0]["labels"] != sft.IGNORE_INDEX).sum())}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant (after one warm-up step)")
    parser.add_argument("--micro", type=int, default=16)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--folder", help="an existing shaped folder (default: written to a temporary folder)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    from singer_rec.shaped_models import write_qwen25_folder

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder or str(write_qwen25_folder(Path(tmp) / "qwen", "0.5b", num_hidden_layers=args.layers))
        rows = {}
        for name in args.variants:
            load_before = os.getloadavg()[0]
            out = subprocess.run([sys.executable, __file__, "--child", "--variant", name, "--folder", folder,
                                  "--steps", str(args.steps), "--micro", str(args.micro), "--length", str(args.length),
                                  "--threads", str(args.threads)], capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"variant {name!r} failed:\n{out.stderr[-3000:]}")
            rows[name] = json.loads(out.stdout.strip().splitlines()[-1]) | {
                "load": f"{load_before:.1f}-{os.getloadavg()[0]:.1f}"}
    base = rows.get("full logits (before)")
    print(f"micro-batch {args.micro} x {args.length} tokens ({next(iter(rows.values()))['answer_tokens']} answer "
          f"tokens), {args.layers} layers, {args.threads} threads, median of {args.steps} steps after 1 warm-up")
    print("| variant | micro-batch fwd+bwd wall s | CPU s | optimizer step wall s | peak RSS MiB | "
          "increase over pre-step RSS MiB | load average | fwd+bwd CPU ratio | peak ratio | first loss |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        ratio = (f"{base['cpu_s'] / row['cpu_s']:.2f}× | {base['peak_mb'] / row['peak_mb']:.2f}×" if base
                 else "- | -")
        print(f"| {name} | {row['wall_s']:.2f} | {row['cpu_s']:.2f} | {row['optimizer_wall_s']:.2f} | "
              f"{row['peak_mb']:,.0f} | "
              f"{row['step_increase_mb']:,.0f} | {row['load']} | {ratio} | {row['first_loss']:.4f} |")


if __name__ == "__main__":
    main()
