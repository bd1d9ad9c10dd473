"""Process helpers shared by the kill-and-resume tests."""
from __future__ import annotations

import signal

import psutil


def kill_tree(pid: int) -> None:
    """SIGKILL a process and every process below it: torchrun starts its workers in sessions of their
    own, so killing the launcher's group alone would leave them training."""
    root = psutil.Process(pid)
    for process in [*root.children(recursive=True), root]:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
