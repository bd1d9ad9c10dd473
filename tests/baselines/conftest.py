"""One torch thread for the baseline tests: on the shared 2-core CPU, torch's default thread pool
oversubscribes the cores and made a tiny training run over 10x slower (140 s instead of 11 s)."""
import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
