"""Requests/s and latency of the served recommender: HTTP (`mlflow models serve`) vs SidRecommender in-process.

    python benchmarks/serving/bench_serving.py --model data/demo/06_models/rl_model --runs 5

The model folder is logged and registered in a scratch sqlite store (a temporary folder), served
on 127.0.0.1 by `mlflow models serve --env-manager local`, and queried with batches of 1 and 32
histories (real item ids of the folder's SID map, seeded) from one client, one call at a time.
The in-process side calls ``SidRecommender.resolve_items`` + ``recommend`` with the same beam
width and k on the same histories; both sides run interleaved in each run, so a change of load
hits both. Reported: the median over runs of histories/s and of each run's p50/p95 call latency,
and the load average before and after. ``--threads`` is the torch CPU threads of both sides.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model folder or versioned model dataset folder")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--calls", type=int, nargs="+", default=[20, 3], help="calls per run, one per batch size")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--beams", type=int, default=20)
    parser.add_argument("--history-length", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser.parse_args(argv)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def timed(call, n: int, batch: int) -> dict[str, float]:
    latencies = []
    started = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - t)
    total = time.perf_counter() - started
    return {"per_s": n * batch / total, "p50_ms": 1000 * percentile(latencies, 0.5),
            "p95_ms": 1000 * percentile(latencies, 0.95)}


def main(argv=None) -> int:
    args = parse_args(argv)
    if len(args.calls) != len(args.batches):
        raise SystemExit("--calls needs one count per --batches value")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from singer_rec.recommend import SidRecommender, resolve_model_folder
    from singer_rec.serving import server
    from singer_rec.serving.publish import log_in_new_run

    torch.set_num_threads(args.threads)
    folder = resolve_model_folder(args.model)
    load_before = os.getloadavg()
    config = {"num_beams": args.beams, "default_k": args.k, "max_batch": max(args.batches), "batch_size": 32}
    recommender = SidRecommender.from_folder(folder)
    rng = random.Random(args.seed)
    items = recommender.item_ids
    batches = {b: [rng.sample(items, args.history_length) for _ in range(b)] for b in args.batches}
    results: dict[str, dict[int, list[dict]]] = {"http": {b: [] for b in args.batches},
                                                   "in-process": {b: [] for b in args.batches}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        uri = f"sqlite:///{root / 'mlflow.db'}"
        started = time.perf_counter()
        log_in_new_run(folder, uri, "bench-singer", config, artifact_location=(root / "artifacts").as_uri())
        log_s = time.perf_counter() - started
        port = server.free_port()
        env = dict(os.environ, MLFLOW_TRACKING_URI=uri, OMP_NUM_THREADS=str(args.threads))
        env.pop("MLFLOW_RUN_ID", None)
        log = root / "server.log"
        started = time.perf_counter()
        process = server.start("models:/bench-singer/latest", port, log, env, cwd=root)
        url = f"http://127.0.0.1:{port}"
        try:
            server.wait_until_ready(process, url, log, timeout_s=300)
            start_s = time.perf_counter() - started
            for batch, histories in batches.items():  # one warm-up call each
                server.post(url, {"dataframe_records": [{"history": h, "k": args.k} for h in histories]})
            for run in range(args.runs):
                for batch, n in zip(args.batches, args.calls):
                    histories = batches[batch]
                    body = {"dataframe_records": [{"history": h, "k": args.k} for h in histories]}

                    def http():
                        status, answer = server.post(url, body)
                        if status != 200:
                            raise RuntimeError(f"HTTP {status}: {answer}")

                    def direct():
                        resolved = [recommender.resolve_items(h) for h in histories]
                        recommender.recommend(resolved, k=args.k, num_beams=args.beams, batch_size=32)

                    results["http"][batch].append(timed(http, n, batch))
                    results["in-process"][batch].append(timed(direct, n, batch))
                print(f"run {run + 1}/{args.runs} done (load {os.getloadavg()[0]:.2f})", file=sys.stderr)
        finally:
            server.stop(process)
    load_after = os.getloadavg()
    summary = {side: {b: {key: statistics.median(r[key] for r in runs) for key in ("per_s", "p50_ms", "p95_ms")}
                      for b, runs in by_batch.items()} for side, by_batch in results.items()}
    print(f"model: {folder} ({len(items)} items), k={args.k}, beam {args.beams}, history {args.history_length}, "
          f"{args.threads} torch thread(s), median of {args.runs} runs")
    print(f"log + register {log_s:.1f} s; server start to /ping {start_s:.1f} s")
    print(f"load average before {load_before[0]:.2f} / {load_before[1]:.2f}, after {load_after[0]:.2f} / {load_after[1]:.2f}")
    print("| path | batch | histories/s | p50 ms | p95 ms |")
    print("|---|---|---|---|---|")
    for side, by_batch in summary.items():
        for batch, row in by_batch.items():
            print(f"| {side} | {batch} | {row['per_s']:.1f} | {row['p50_ms']:.0f} | {row['p95_ms']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "runs": results, "log_s": log_s, "start_s": start_s,
                                         "load_before": load_before, "load_after": load_after}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
