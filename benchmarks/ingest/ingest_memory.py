"""Peak Python memory of reading an Amazon-2018-shaped review dump: singer_rec's streaming reader
vs the common 'read all lines, json.loads each' approach, side by side in one process.

    python benchmarks/ingest/ingest_memory.py --lines 20000 80000 --repeats 3

Writes the dumps to a temporary folder (deleted afterwards). Peak memory is measured with
tracemalloc (Python allocations only); times with perf_counter. Prints a markdown table of medians.
"""
from __future__ import annotations

import argparse
import gzip
import json
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

from singer_rec.data.sources import AMAZON2018_FIELDS, IngestReport, collect_interactions, iter_records
from singer_rec.data.synthetic import generate_amazon_like


def write_dump(path: Path, n_lines: int) -> None:
    reviews, _ = generate_amazon_like(0, n_users=400, n_items=240)
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for n in range(n_lines):
            record = dict(reviews[n % len(reviews)])
            record["reviewerID"] = f"{record['reviewerID']}{n // len(reviews)}"
            record["reviewText"] = "Works as described. " * 20  # real reviews are long
            handle.write(json.dumps(record) + "\n")


def stream_only(path: Path) -> int:
    """Parse every line, keep nothing (the reader's own footprint)."""
    return sum(1 for _ in iter_records(path, IngestReport()))


def stream_to_table(path: Path) -> int:
    """What ingest does: stream and keep (user, item, time) per review."""
    report = IngestReport()
    records = ((f"{path}:{n}", r) for n, r in iter_records(path, report))
    return len(collect_interactions(records, AMAZON2018_FIELDS, report, skip_bad_lines=False))


def read_all_then_parse(path: Path) -> int:
    """The alternative: all lines into memory, then every record parsed into a list."""
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        lines = handle.readlines()
    records = [json.loads(line) for line in lines]
    return len(records)


def measure(func, path: Path) -> tuple[float, float]:
    tracemalloc.start()
    started = time.perf_counter()
    func(path)
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, nargs="+", default=[20000, 80000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    methods = {"stream (parse only)": stream_only, "stream -> interactions (ingest)": stream_to_table,
               "readlines + json.loads all": read_all_then_parse}
    print("| lines | method | peak MiB (median) | seconds (median) |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for n_lines in args.lines:
            path = Path(folder) / f"reviews_{n_lines}.json.gz"
            write_dump(path, n_lines)
            for name, func in methods.items():
                runs = [measure(func, path) for _ in range(args.repeats)]
                peak = statistics.median(r[0] for r in runs)
                seconds = statistics.median(r[1] for r in runs)
                print(f"| {n_lines:,} | {name} | {peak:.1f} | {seconds:.2f} |", flush=True)


if __name__ == "__main__":
    main()
