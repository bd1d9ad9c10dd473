"""Environments keep their data apart: `kedro run` in one environment, then another, and neither
touches the other's files (each writes under its own `data_root`)."""
import gzip
import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from test_end_to_end import _kedro, _project_copy

pytestmark = pytest.mark.slow


def _tiny_gift_cards(raw: Path) -> None:
    """An Amazon-2018-shaped Gift_Cards dump: 12 users x 6 of 8 items, each a 5-core survivor."""
    raw.mkdir(parents=True)
    reviews = [{"reviewerID": f"U{u:02d}", "asin": f"G{(u + k) % 8}", "unixReviewTime": 1_500_000_000 + 86_400 * (7 * u + k)}
               for u in range(12) for k in range(6)]
    meta = [{"asin": f"G{i}", "title": f"Gift card {i}", "brand": "Shop", "category": ["Gift Cards"]} for i in range(8)]
    for name, records in (("Gift_Cards_5.json.gz", reviews), ("meta_Gift_Cards.json.gz", meta)):
        with gzip.open(raw / name, "wt", encoding="utf-8") as handle:
            handle.write("\n".join(json.dumps(r) for r in records) + "\n")


def _snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``root``: content hash and modification time."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_two_environments_one_after_the_other_leave_each_other_alone(tmp_path):
    root = _project_copy(tmp_path)
    raw = tmp_path / "raw"
    _tiny_gift_cards(raw)
    demo, gift = root / "data" / "demo", root / "data" / "giftcards"

    _kedro(root, "run", "--to-nodes=split", "--params=ingest.synthetic.n_users=400")
    demo_files = _snapshot(demo)
    assert "02_intermediate/items.parquet" in demo_files and "08_reporting/split_stats.json" in demo_files

    _kedro(root, "run", "--env=giftcards", "--to-nodes=split", f"--params=raw_root={raw}")
    assert _snapshot(demo) == demo_files  # the demo's files: untouched
    gift_files = _snapshot(gift)
    assert set(gift_files) == set(demo_files)  # the same stages wrote the same datasets, elsewhere
    items = pd.read_parquet(gift / "02_intermediate" / "items.parquet")
    assert sorted(items["item_id"]) == [f"G{i}" for i in range(8)]
    assert json.loads((gift / "08_reporting" / "split_stats.json").read_text())["users"] == 12
    assert json.loads((demo / "08_reporting" / "split_stats.json").read_text())["users"] == 400

    _kedro(root, "run", "--to-nodes=split", "--params=ingest.synthetic.n_users=300")
    assert _snapshot(gift) == gift_files  # and the other way round
    assert json.loads((demo / "08_reporting" / "split_stats.json").read_text())["users"] == 300
    # nothing was written outside the environments' data roots
    assert sorted(p.name for p in (root / "data").iterdir()) == ["demo", "giftcards"]
