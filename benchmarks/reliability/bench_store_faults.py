"""How long a failing MLflow store holds a node up, and what the fault-tolerant logging costs.

    python benchmarks/reliability/bench_store_faults.py [--repeats 3] [--with-default-retries]

Measures, in one process (median of ``--repeats``):

- the seconds until one ``singer_rec.tracking.log_metrics`` call gives up on an unreachable
  server (a closed localhost port) for MLflow's ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` 0 and 2
  (and MLflow's default 7 with ``--with-default-retries``: about 4 minutes a call);
- the same for a sqlite file locked by another connection (MLflow waits 20 s on a lock);
- the cost of a later call for the same run (skipped: the failure was reported once);
- 100 metric logs to a healthy sqlite store, through ``tracking.log_metrics`` vs a bare
  ``MlflowClient.log_batch`` (the guard's overhead);
- ``folder_fingerprint`` throughput on a 256 MiB file.

Prints a markdown table.
"""
from __future__ import annotations

import argparse
import os
import socket
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from singer_rec import tracking
from singer_rec.datasets.model_folder import folder_fingerprint


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def give_up_seconds(uri: str, run_id: str, retries: str | None) -> tuple[float, float]:
    """(first failing call, the next call for the same run) in seconds."""
    if retries is None:
        os.environ.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES", None)
    else:
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = retries
    tracking.forget_failures()
    first = timed(lambda: tracking.log_metrics({"loss": 1.0}, step=1, run_id=run_id, uri=uri))
    assert tracking.run_failed(run_id)
    again = timed(lambda: tracking.log_metrics({"loss": 0.5}, step=2, run_id=run_id, uri=uri))
    return first, again


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--with-default-retries", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "mlflow.db"
        uri = f"sqlite:///{db}"
        client = MlflowClient(uri)
        run_id = client.create_run(client.create_experiment("bench")).info.run_id

        server = f"http://127.0.0.1:{closed_port()}"
        for retries in ["0", "2"] + ([None] if args.with_default_retries else []):
            results = [give_up_seconds(server, "0" * 32, retries) for _ in range(args.repeats if retries else 1)]
            label = f"unreachable server, MLFLOW_HTTP_REQUEST_MAX_RETRIES={retries or 'default (7)'}"
            rows.append((label, statistics.median(r[0] for r in results), statistics.median(r[1] for r in results)))

        locker = sqlite3.connect(db, timeout=0, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        locked = [give_up_seconds(uri, run_id, "0") for _ in range(1)]  # 20 s each: one is enough
        locker.execute("ROLLBACK")
        rows.append(("sqlite file locked by another connection", locked[0][0], locked[0][1]))

        tracking.forget_failures()
        n = 100
        guarded_runs, bare_runs = [], []
        for repeat in range(args.repeats + 1):  # interleaved; the first pair warms the store up
            # new keys every time: MLflow skips a row it already holds, which would time nothing
            g = timed(lambda: [tracking.log_metrics({f"g{repeat}": float(i)}, step=i, run_id=run_id, uri=uri)
                               for i in range(n)])
            b = timed(lambda: [client.log_batch(run_id, metrics=[Metric(f"b{repeat}", float(i), 0, i)])
                               for i in range(n)])
            if repeat:
                guarded_runs.append(g)
                bare_runs.append(b)
        guarded, bare = statistics.median(guarded_runs), statistics.median(bare_runs)

        big = Path(tmp) / "folder"
        big.mkdir()
        (big / "model.safetensors").write_bytes(os.urandom(256 * 2**20))
        hashing = statistics.median(timed(lambda: folder_fingerprint(big)) for _ in range(args.repeats))

    print("| store fault | first call gives up after (s) | next call for that run (s) |")
    print("|---|---|---|")
    for label, first, again in rows:
        print(f"| {label} | {first:.2f} | {again:.4f} |")
    print()
    print(f"healthy sqlite store, {n} metric logs: tracking.log_metrics {guarded:.2f} s, "
          f"bare MlflowClient.log_batch {bare:.2f} s ({guarded / bare:.2f}x)")
    print(f"folder_fingerprint, 256 MiB: {hashing:.2f} s ({256 / hashing:.0f} MiB/s)")
    print(f"load average: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
