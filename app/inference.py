"""The inference thread: one `session.step` per tick, apart from the window so it never freezes.

Each tick asks its action source for one action at the tick's start (the live source samples the
input state there), runs the model, copies the frame to the host once and publishes it; the window
shows whichever tick finished last. Pause, single step and reset are requests the thread carries
out between ticks, so only this thread ever touches the session. On CUDA the ticks run on the
thread's own stream.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Protocol

import torch

from engine.core.runner import ActionSource, Runner, Tick
from engine.core.session import Session


class TickListener(Protocol):
    """Told about every model tick and every reset, on the inference thread (recorder, replay check)."""

    def on_tick(self, tick: Tick) -> None: ...

    def on_reset(self) -> None: ...


class InferenceLoop:
    """Runs ticks on a background thread. `fps` > 0 paces ticks to that rate; 0 runs flat out."""

    def __init__(self, session: Session, next_action: ActionSource, fps: float = 0.0,
                 listeners: Sequence[TickListener] = (), paused: bool = False) -> None:
        self.session = session
        self.next_action = next_action
        self.period = 1.0 / fps if fps > 0 else 0.0
        self.listeners = list(listeners)
        self.error: BaseException | None = None
        self.finished = False
        self._cond = threading.Condition()
        self._paused = paused
        self._steps = 0
        self._reset = self._stop = False
        self._busy = False
        self._latest: Tick | None = None
        self._next_time = 0.0
        self._done_times: deque[float] = deque(maxlen=20)
        self._history: list[torch.Tensor] = []
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)
        self._stream = torch.cuda.Stream(session.device) if session.device.type == "cuda" else None
        self.runner = Runner(session, self._stream)

    def start(self) -> InferenceLoop:
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Ask the thread to end after its current tick and wait for it."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def paused(self) -> bool:
        return self._paused

    def set_paused(self, paused: bool) -> None:
        with self._cond:
            self._paused = paused
            self._cond.notify_all()

    def request_step(self) -> None:
        """One tick while paused."""
        with self._cond:
            self._steps += 1
            self._cond.notify_all()

    def request_reset(self) -> None:
        """Back to the prompt frames before the next tick."""
        with self._cond:
            self._reset = True
            self.finished = False
            self._cond.notify_all()

    def latest(self) -> Tick | None:
        return self._latest

    @property
    def busy(self) -> bool:
        """A tick or reset is running (a pause takes effect once it has finished)."""
        return self._busy

    def actions_since_reset(self) -> torch.Tensor:
        """(N, A) actions of every tick since the last reset: replaying them re-creates the current state."""
        with self._cond:
            rows = list(self._history)
        return torch.stack(rows) if rows else torch.zeros((0, self.session.action_dim))

    def ticks_per_second(self) -> float | None:
        times = list(self._done_times)
        if len(times) < 2 or times[-1] == times[0]:
            return None
        return (len(times) - 1) / (times[-1] - times[0])

    def _wait_for_work(self) -> str:
        """Block until there is something to do: 'stop', 'reset' or 'tick'."""
        with self._cond:
            self._busy = False
            while True:
                if self._stop:
                    return "stop"
                if self._reset:
                    self._reset, self._busy = False, True
                    return "reset"
                if self._steps:
                    self._steps -= 1
                    self._busy = True
                    return "tick"
                if self._paused or self.finished:
                    self._cond.wait()
                    continue
                delay = self._next_time - time.perf_counter()
                if delay <= 0:
                    self._busy = True
                    return "tick"
                self._cond.wait(delay)

    def _run(self) -> None:
        stream = contextlib.nullcontext()
        if self._stream is not None:  # start after whatever loading queued on the default stream
            self._stream.wait_stream(torch.cuda.default_stream(self.session.device))
            stream = torch.cuda.stream(self._stream)
        try:
            with stream, torch.inference_mode():
                self._latest = self.runner.prompt()
                while (work := self._wait_for_work()) != "stop":
                    if work == "reset":
                        self._do_reset()
                    else:
                        self._do_tick()
        except BaseException as exc:  # re-raised by the window thread, which owns the clean-up
            self.error = exc

    def _do_reset(self) -> None:
        tick = self.runner.reset()
        with self._cond:
            self._history.clear()
        self._done_times.clear()
        for listener in self.listeners:
            listener.on_reset()
        self._latest = tick

    def _do_tick(self) -> None:
        start = time.perf_counter()
        self._next_time = start + self.period
        sampled = self.next_action()
        if sampled is None:
            self.finished = True
            return
        action, input_time = sampled
        tick = self.runner.step(action, input_time)
        with self._cond:
            self._history.append(tick.action)
        self._latest = tick
        self._done_times.append(tick.done_time)
        for listener in self.listeners:
            listener.on_tick(tick)
        if tick.episode_over:
            self.request_reset()
