"""Per-stage timing of a tick without host synchronisation inside the tick.

On CUDA each stage is bracketed by events and read only when asked (after the frame copy has
synchronised anyway); on CPU wall-clock time is exact.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch


class StageTimer:
    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._events: dict[str, tuple] = {}
        self._cpu_ms: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self._events[name] = (start, end)
        else:
            t0 = time.perf_counter()
            yield
            self._cpu_ms[name] = (time.perf_counter() - t0) * 1000.0

    def milliseconds(self) -> dict[str, float]:
        """Stage durations of the last tick, in ms (synchronises with the recorded events on CUDA)."""
        if not self.cuda:
            return dict(self._cpu_ms)
        return {name: start.elapsed_time(end) for name, (start, end) in self._events.items()}
