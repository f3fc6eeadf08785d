"""The `,` recorder: turns recording on and off during play and feeds finished ticks to a SegmentWriter.

A segment is opened by the first tick after `,` (on the inference thread, so the actions that led
up to it are known exactly) and stores them as `actions_before_segment`, which lets `--replay`
re-create the model state a segment started from. A reset ends the open segment and starts the next
one at the prompt. Closing a segment (finishing the mp4, assembling the npz) runs on its own thread,
so stopping never stalls the window.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from app.inference import Tick
from engine.recordings import RecordingError, SegmentWriter, check_world_name


class Recorder:
    def __init__(self, root: Path, world: str, fps: float, metadata: Callable[[], dict[str, Any]],
                 history: Callable[[], torch.Tensor], max_bytes: int | None = None,
                 report: Callable[[str], None] = print) -> None:
        self.root, self.world, self.fps = root, check_world_name(world), fps
        self.metadata, self.history, self.max_bytes = metadata, history, max_bytes
        self.report = report
        self.error: str | None = None
        self._lock = threading.Lock()
        self._wanted = False
        self._started_at: float | None = None
        self._writer: SegmentWriter | None = None
        self._segment_start = 0.0
        self._closers: list[threading.Thread] = []

    @property
    def recording(self) -> bool:
        return self._wanted

    def seconds(self) -> float | None:
        """Time since recording was switched on, or None when it is off."""
        started = self._started_at
        return None if started is None else time.perf_counter() - started

    def toggle(self) -> None:
        if self._wanted:
            self.stop()
        else:
            self.start()

    def start(self) -> None:
        with self._lock:
            self._wanted = True
            self._started_at = time.perf_counter()
            self.error = None
        self.report(f"recording to {self.root / self.world}/ (press , again to stop)")

    def stop(self) -> None:
        with self._lock:
            self._wanted = False
            self._started_at = None
            writer, self._writer = self._writer, None
        self._close_later(writer)

    def on_tick(self, tick: Tick) -> None:
        """Inference thread, after every model tick."""
        with self._lock:
            if not self._wanted:
                return
            if self._writer is None:
                before = self.history()[:-1]
                metadata = self.metadata() | {"actions_before_segment": before.tolist()}
                self._writer = SegmentWriter.new_segment(self.root, self.world, self.fps, metadata, self.max_bytes)
                self._segment_start = tick.done_time
            writer = self._writer
            writer.append(tick.frame, tick.action, pose=tick.pose, timestamp=tick.done_time - self._segment_start,
                          extra=tick.extras)
        if writer.error is not None:
            self.error = writer.error
            self.stop()

    def on_reset(self) -> None:
        """Inference thread: the world went back to its prompt, so the open segment ends here."""
        with self._lock:
            writer, self._writer = self._writer, None
        self._close_later(writer)

    def _close_later(self, writer: SegmentWriter | None) -> None:
        if writer is None:
            return
        closer = threading.Thread(target=self._close, args=(writer,), name="close recording")
        self._closers.append(closer)
        closer.start()

    def _close(self, writer: SegmentWriter) -> None:
        try:
            parts = writer.close()
        except RecordingError as exc:
            self.error = str(exc)
            self.report(f"error: {exc}")
            return
        names = ", ".join(f"{stem}.mp4" for stem in parts)
        self.report(f"recorded {writer.frames_appended} frames: {names} (+ .npz)")

    def close(self) -> None:
        """Finish every segment, the open one included (waits for the writers)."""
        self.stop()
        for closer in self._closers:
            closer.join()
