"""One SASRec training epoch on Industrial (MiniOneRec splits, BCE, batch 1024) at 1 vs 2 torch threads.

Alternates the two settings in one process and reports the median of --repeats runs each:

    python benchmarks/baselines/threads.py --repeats 3
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from baselines_minionerec import MINIONEREC, SPLIT_FILES, load_split  # noqa: E402

from singer_rec.baselines.models import build_baseline_model  # noqa: E402
from singer_rec.baselines.sequences import ItemIndex, encode_sequences  # noqa: E402
from singer_rec.baselines.training import TrainConfig, _batch_loss  # noqa: E402


def one_epoch(num_items: int, sequences: torch.Tensor, threads: int) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_baseline_model("sasrec", num_items, max_len=10)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    config, generator = TrainConfig(), torch.Generator().manual_seed(0)
    started = time.perf_counter()
    for start in range(0, len(sequences), config.batch_size):
        loss = _batch_loss(model, sequences[start:start + config.batch_size], config, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="Industrial_and_Scientific")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    item_ids = list(json.loads((MINIONEREC / f"index/{args.dataset}.item.json").read_text()))
    index = ItemIndex(item_ids)
    train = encode_sequences(load_split(MINIONEREC / SPLIT_FILES["train"].format(name=args.dataset)), index, 10)
    sequences = train.full_sequences()
    times: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(args.repeats):
        for threads in (1, 2):
            times[threads].append(one_epoch(index.num_items, sequences, threads))
    median = {t: statistics.median(v) for t, v in times.items()}
    print(pd.DataFrame({"threads": list(median), "median_epoch_s": [round(v, 2) for v in median.values()],
                        "runs": [", ".join(f"{x:.1f}" for x in times[t]) for t in median]}).to_string(index=False))
    print(f"2 threads / 1 thread: {median[2] / median[1]:.2f}x")


if __name__ == "__main__":
    main()
