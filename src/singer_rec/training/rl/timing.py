"""Wall seconds per phase of an RL optimiser step."""
from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator

class PhaseTimer:
    """Wall seconds per named phase of one optimiser step (a phase entered twice adds up).

    The trainer records them per step (``time_<phase>`` in the history and MLflow), so a slow step
    says where its time went without a profiler.
    """

    clock = staticmethod(time.perf_counter)  # a benchmark may swap in time.process_time (CPU seconds)

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = self.clock()
        try:
            yield
        finally:
            self.seconds[name] += self.clock() - started

    def record(self) -> dict[str, float]:
        return {f"time_{name}": value for name, value in self.seconds.items()}


class _NullTimer(PhaseTimer):
    """Times nothing (rollouts outside a training step: the probes, tests)."""

    def __call__(self, name: str):
        return contextlib.nullcontext()


NO_TIMER = _NullTimer()
