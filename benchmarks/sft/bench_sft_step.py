"""SFT training throughput: bf16 autocast vs float32, length-sorted vs unsorted micro-batches, and
torch threads.

Runs every variant (for each of ``--threads``) in one process, interleaved, on the same model and
rows; reports the median samples/s (wall and per CPU-second) of ``--repeats`` optimizer steps each.

    python benchmarks/sft/bench_sft_step.py --rows data/05_model_input/sft_dataset_train.parquet \
        --items data/02_intermediate/items.parquet --item-sids <item_sids.parquet> --repeats 5
    # one thread against two, float32 only, the Office/Industrial model's shape:
    python benchmarks/sft/bench_sft_step.py ... --threads 1 2 --variants "float32, length-sorted" \
        --hidden 256 --layers 4 --intermediate 704 --tokenizer-vocab 8000 --batch 128
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd
import torch

from singer_rec import modeling
from singer_rec.training import common, sft

KINDS = {  # name: (autocast dtype, length-sorted micro-batches)
    "float32, unsorted": (None, False),
    "float32, length-sorted": (None, True),
    "bf16 autocast, unsorted": (torch.bfloat16, False),
    "bf16 autocast, length-sorted": (torch.bfloat16, True),
}

def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", required=True)
    parser.add_argument("--items", required=True)
    parser.add_argument("--item-sids", required=True)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--micro", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[2], help="torch threads; several: each is a variant")
    parser.add_argument("--variants", nargs="+", default=None, choices=list(KINDS), help="default: all four")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--intermediate", type=int, default=None, help="MLP width (default 3 x hidden)")
    parser.add_argument("--tokenizer-vocab", type=int, default=2000)
    parser.add_argument("--device", default="cpu", help="cpu | cuda (the model and every batch go there)")
    args = parser.parse_args()

    rows = pd.read_parquet(args.rows)
    items = pd.read_parquet(args.items)
    vocab = modeling.sid_vocabulary_for(pd.read_parquet(args.item_sids)["sid"])
    cfg = {"preset": "scratch", "scratch": {"hidden_size": args.hidden, "num_hidden_layers": args.layers,
                                            "num_attention_heads": 4, "num_key_value_heads": 2,
                                            "intermediate_size": args.intermediate or 3 * args.hidden,
                                            "tokenizer_vocab_size": args.tokenizer_vocab}}
    model, tok = modeling.build_model(cfg, sft.tokenizer_corpus(items, {}), vocab, seed=0)
    device = torch.device(args.device)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    examples = [sft.encode_example(tok, p, a, 256) for p, a in zip(rows["prompt"], rows["answer"])]
    rng = np.random.default_rng(0)
    batches = [[examples[i] for i in rng.choice(len(examples), args.batch, replace=False)] for _ in range(args.repeats)]
    chosen = {k: v for k, v in KINDS.items() if args.variants is None or k in args.variants}
    variants = {(f"{name}, {t} thread{'s' if t > 1 else ''}" if len(args.threads) > 1 else name): (dtype, sort, t)
                for t in args.threads for name, (dtype, sort) in chosen.items()}
    wall: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    for batch in batches:  # interleaved: every variant sees the same load and the same rows
        for name, (dtype, sort, threads) in variants.items():
            torch.set_num_threads(threads)
            local = sorted(batch, key=lambda e: len(e[0])) if sort else list(batch)
            t0, c0 = time.perf_counter(), time.process_time()
            for start in range(0, len(local), args.micro):
                b = {k: v.to(device) for k, v in sft.collate(local[start : start + args.micro], tok.pad_token_id).items()}
                with common.autocast(device, dtype):
                    loss, n = sft.answer_token_loss(model, b)
                (loss / n).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()  # the clock stops when the GPU is done
            wall[name].append(len(local) / (time.perf_counter() - t0))
            cpu[name].append(len(local) / (time.process_time() - c0))
    print("| variant | samples/s (wall, median) | samples per CPU-second (median) |")
    print("|---|---|---|")
    for name in variants:
        print(f"| {name} | {statistics.median(wall[name]):.1f} | {statistics.median(cpu[name]):.1f} |")


if __name__ == "__main__":
    main()
