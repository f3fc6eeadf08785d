"""Finalising open recordings however the program ends: atexit, and SIGTERM/SIGHUP turned into exceptions."""

from __future__ import annotations

import atexit
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from engine.errors import EngineError
from engine.recordings.writer import OPEN_WRITERS


class Terminated(SystemExit):
    """SIGTERM/SIGHUP turned into an exception, so `finally` blocks and atexit hooks still run."""


_EXTRA_CLOSERS: list[Callable[[], Iterable[Any]]] = []


ENDING_SIGNALS = (signal.SIGTERM, signal.SIGINT, *((signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ()))
_ENDED_BY_SIGNAL = threading.Event()  # set by the first signal: from then on the program is ending


def _ignore_further_signals() -> None:
    """From the main thread: a second Ctrl+C or SIGTERM must not interrupt the finalisation the first asked for,
    nor the interpreter's shutdown (it joins the threads before the atexit hooks run)."""
    if threading.current_thread() is threading.main_thread():
        for signum in ENDING_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)


def _close_all_at_exit() -> None:
    _ignore_further_signals()
    writers = [*OPEN_WRITERS, *(w for getter in _EXTRA_CLOSERS for w in getter())]
    for writer in dict.fromkeys(writers):
        try:
            writer.close()
        except EngineError as exc:
            print(f"error: {exc}", file=sys.stderr)


atexit.register(_close_all_at_exit)


def _end_on_signal(signum: int, frame: object) -> None:
    """Ctrl+C as KeyboardInterrupt, SIGTERM/SIGHUP as Terminated; the signals after it are ignored."""
    _ENDED_BY_SIGNAL.set()
    _ignore_further_signals()
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(128 + signum)


def install_signal_finalizers(writers_getter: Callable[[], Iterable[Any]] | None = None) -> Callable[[], None]:
    """Make SIGTERM/SIGHUP (and SIGINT, unless ignored) end the program through exceptions, so open
    recordings are finalised by `with`/`finally` blocks or, at the latest, by the atexit hook. The first signal
    makes the program ignore the ones after it (a double Ctrl+C), to its end.

    Every open SegmentWriter is closed at exit anyway; `writers_getter` adds other objects with a
    `close()` method. Call from the main thread. Returns a function that restores the previous handlers.
    """
    if writers_getter is not None:
        _EXTRA_CLOSERS.append(writers_getter)
    previous: dict[int, Any] = {}
    for signum in ENDING_SIGNALS:
        if signal.getsignal(signum) is signal.SIG_IGN:
            continue
        previous[signum] = signal.signal(signum, _end_on_signal)

    def restore() -> None:
        if not _ENDED_BY_SIGNAL.is_set():  # after a signal the program is ending: the rest stay ignored
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if writers_getter is not None and writers_getter in _EXTRA_CLOSERS:
            _EXTRA_CLOSERS.remove(writers_getter)

    return restore
