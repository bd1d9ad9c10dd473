"""`kedro run --env=custom` as a user types it, on the example catalogue in tests/data/custom_example:
the whole default chain (ingest → split → embed → sid → prompts → sft → rl → evaluate), with the
few-steps caps of the paper config's dry run so that it takes a couple of minutes on a CPU."""
import json

import pandas as pd
import pytest

from conftest import PROJECT_ROOT
from test_end_to_end import _kedro, _latest, _project_copy
from test_paper_dry_run import CPU_CAPS

pytestmark = pytest.mark.slow

EXAMPLE = PROJECT_ROOT / "tests" / "data" / "custom_example"


def test_custom_environment_runs_the_default_chain_on_the_example(tmp_path):
    root = _project_copy(tmp_path)
    params = ",".join((f"raw_root={EXAMPLE}", *CPU_CAPS))
    _kedro(root, "run", "--env=custom", f"--params={params}", timeout=1200)
    data = root / "data" / "custom"
    items = pd.read_parquet(data / "02_intermediate" / "items.parquet")
    assert len(items) == 36 and items["item_id"].iloc[0] == "CAM-01"
    stats = json.loads((data / "08_reporting" / "split_stats.json").read_text())
    assert (stats["users"], stats["items"], stats["train"], stats["valid"], stats["test"]) == (48, 36, 231, 29, 29)
    report = json.loads((data / "08_reporting" / "sid_report.json").read_text())
    # 36 items, 3 levels: r = 4 (4^3 = 64 >= 36) beats 36 // 16 = 2
    assert report["codebook_size"] == 4 and report["codebook_size_rule"].startswith("auto: K = min(256, n, max(r, n // 16))")
    sids = pd.read_parquet(_latest(data / "04_feature" / "item_sids.parquet"))
    assert sids["sid"].is_unique and len(sids) == 36
    for model in ("sft", "rl"):
        metrics = json.loads((data / "08_reporting" / model / "test_metrics.json").read_text())
        assert metrics["n"] == 16 and 0.0 <= metrics["NDCG@10"] <= metrics["HR@10"] <= 1.0
    assert not (root / "data" / "demo").exists()  # the environment writes under its own data_root only
