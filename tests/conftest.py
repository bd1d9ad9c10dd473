"""Shared test fixtures. Real data lives in ../shared beside the checkout and is never copied."""
import os
from pathlib import Path

import pytest

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data" / "amazon18"


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data/amazon18, or a skip that says why."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (../shared is absent beside the checkout)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def one_torch_thread_for_baselines(request):
    """One torch thread for the baseline tests: on the shared 2-core CPU, torch's default thread pool
    oversubscribes the cores and made a tiny training run over 10x slower (140 s instead of 11 s).
    (Here rather than in tests/baselines/conftest.py: a second module named ``conftest`` would shadow
    this one for the tests that import PROJECT_ROOT from it.)"""
    if "baselines" not in request.node.path.parts:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
