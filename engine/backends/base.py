"""One interface for how a world's network calls run: eager PyTorch, torch.compile (+ CUDA graphs), TensorRT.

A world hands each static-shape call of its tick to the backend once, at load:

    step = backend.compile_step(denoiser.denoise, example_inputs, name="denoiser")

and calls `step(...)` like the function it wraps. What comes back depends on the backend: the function
itself (eager), the function compiled with static shapes and, on CUDA, replayed from a captured CUDA
graph (compile), or a TensorRT engine built by `build_trt.py` for the unit `name` (trt). A world whose
tick repeats a compiled call (the denoising steps) may compile the call and capture the loop around it:

    step = backend.compile(units.step, name="dit_step")
    tick = backend.capture(lambda x, ...: loop calling step, example_inputs, name="dit_tick", buffers=(2, 3))

`buffers` names the arguments that are the world's own persistent state (a key/value cache written in
place): a captured graph keeps reading and writing those very tensors, while every other tensor
argument is copied into the graph's private input each call. Outputs are fresh tensors each call.
Compilation and capture happen in `warm_up()`, under a progress bar, when the world has been built.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from tqdm import tqdm

from engine.backends.device import dtype_name

Fn = Callable[..., Any]


class PreparedCall:
    """A network call that is made ready (compiled, warmed up, captured) once, before its first use."""

    def __init__(self, fn: Fn, example_inputs: Sequence[Any], name: str) -> None:
        self.fn = fn
        self.example_inputs = tuple(example_inputs)
        self.name = name
        self._ready: Fn | None = None

    def build(self) -> Fn:
        """The callable that replaces `fn`; the base class runs `fn` once (compiling it if it is compiled)."""
        with torch.no_grad():
            self.fn(*self.example_inputs)
        return self.fn

    def prepare(self) -> None:
        if self._ready is None:
            self._ready = self.build()

    def __call__(self, *args: Any) -> Any:
        self.prepare()
        return self._ready(*args)


class Backend:
    """Eager PyTorch: every call runs as written. Subclasses compile, capture or replace the calls."""

    name = "eager"
    # True where `compile(fn, name)` swaps a whole exported unit for an engine built from it (TensorRT),
    # False where it compiles Python functions, which a world may then apply to smaller pieces.
    replaces_units = False

    def __init__(self, device: torch.device, dtype: torch.dtype, reason: str = "") -> None:
        self.device = device
        self.dtype = dtype
        self.reason = reason  # why `--backend auto` chose this one (empty when asked for by name)
        self._pending: list[PreparedCall] = []

    @property
    def label(self) -> str:
        """What the HUD and the recording metadata call this backend."""
        return self.name

    def compile(self, fn: Fn, name: str) -> Fn:
        """`fn` (static shapes) made faster as a unit; compiled lazily at its first call."""
        return fn

    def capture(self, fn: Fn, example_inputs: Sequence[Any], name: str, buffers: Sequence[int] = ()) -> Fn:
        """`fn`, replayed as a whole where the backend can (a CUDA graph); prepared by `warm_up`."""
        return fn

    def compile_step(self, fn: Fn, example_inputs: Sequence[Any], name: str, buffers: Sequence[int] = ()) -> Fn:
        """`compile` then `capture`: the one call a world needs for a static-shape network call."""
        return self.capture(self.compile(fn, name), example_inputs, name, buffers)

    def _register(self, call: PreparedCall) -> PreparedCall:
        self._pending.append(call)
        return call

    def warm_up(self, desc: str | None = None) -> None:
        """Compile/capture every registered call now, with a progress bar (never a silent pause)."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        with tqdm(pending, desc=desc or f"warm-up ({self.label})", unit="call", leave=False) as bar:
            for call in bar:
                bar.set_postfix_str(call.name)
                call.prepare()

    def describe(self) -> str:
        """One log line: backend, device, precision and, for auto, why this backend."""
        why = f" ({self.reason})" if self.reason else ""
        return f"backend: {self.label} on {self.device}, {dtype_name(self.dtype)}{why}"
