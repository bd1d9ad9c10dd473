"""benchmarks/gpu/paper_shape_check.py on the CPU at the tiny shape: every check row passes (the kedro
row is tests/test_paper_dry_run.py's run, skipped here), one markdown row per check."""
import os
import re
import subprocess
import sys

import pytest

from conftest import PROJECT_ROOT

pytestmark = pytest.mark.slow


def test_paper_shape_check_smoke_run_on_the_cpu(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, str(PROJECT_ROOT / "benchmarks" / "gpu" / "paper_shape_check.py"),
                           "--device", "cpu", "--shape", "tiny", "--skip", "kedro", "--out", str(tmp_path)],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=900)
    rows = dict(re.findall(r"^\| (\w+): .* \| (pass|FAIL|skipped) \|$", proc.stdout, flags=re.M))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert rows == {"model": "pass", "sid_rows": "pass", "beam": "pass", "sft": "pass", "rl": "pass", "lora": "pass",
                    "kedro": "skipped"}, proc.stdout
