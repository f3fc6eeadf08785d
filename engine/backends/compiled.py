"""`--backend compile`: torch.compile of the static-shape network calls, CUDA-graph replay of a tick's calls.

On CUDA, `capture` records everything a call launches (the compiled kernels of every denoising step of a
tick, the sampler arithmetic between them) into one CUDA graph and replays it, so a tick costs a few
launches instead of thousands. On CPU the compiled calls run inductor's C++ kernels, without graphs, on
private copies of their inputs (`StaticInputCall`), so that one compiled graph serves every call.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils._pytree import tree_map

from engine.backends.base import Backend, Fn, PreparedCall

# Runs before capture: the first compiles, the next let autotuning and lazy CUDA initialisation settle.
WARMUP_RUNS = 3


def compile_available(device: torch.device) -> str | None:
    """None when torch.compile can generate code for `device`, else the one-line reason it cannot."""
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        return None if has_triton() else "torch.compile needs Triton on CUDA (pip install triton)"
    if device.type == "cpu":
        if any(shutil.which(cxx) for cxx in ("g++", "c++", "clang++")):
            return None
        return "torch.compile needs a C++ compiler on CPU (e.g. apt-get install g++)"
    return f"torch.compile is not set up for {device.type} here"


class StaticInputCall(PreparedCall):
    """`fn` called on private copies of its inputs, laid out as the example inputs were.

    torch.compile guards every stride, even of size-1 dimensions, so a view of a ring buffer (a different
    batch stride each time) would compile the graph again; copied into fixed tensors, one graph serves every
    call. The arguments at `buffers` are the world's own state (written in place) and are passed as they are.
    """

    def __init__(self, fn: Fn, example_inputs: Sequence[Any], name: str, buffers: Sequence[int]) -> None:
        super().__init__(fn, example_inputs, name)
        self.buffers = frozenset(buffers)

    def static_inputs(self) -> tuple:
        return tuple(arg if i in self.buffers or not isinstance(arg, torch.Tensor) else arg.clone()
                     for i, arg in enumerate(self.example_inputs))

    def load(self, static: tuple, args: Sequence[Any]) -> None:
        """Copy `args` into the static inputs, checking that buffers and non-tensor arguments are unchanged."""
        if len(args) != len(static):
            raise TypeError(f"{self.name}: prepared with {len(static)} arguments, called with {len(args)}")
        for i, (arg, fixed) in enumerate(zip(args, static, strict=True)):
            if i in self.buffers:
                if arg.data_ptr() != fixed.data_ptr():
                    raise ValueError(f"{self.name}: argument {i} must be the buffer it was prepared with")
            elif isinstance(fixed, torch.Tensor):
                fixed.copy_(arg)
            elif arg != fixed:
                raise ValueError(f"{self.name}: argument {i} was {fixed!r} when prepared, got {arg!r}")

    def build(self) -> Fn:
        static = self.static_inputs()
        with torch.no_grad():
            self.fn(*static)

        def call(*args: Any) -> Any:
            self.load(static, args)
            return self.fn(*static)

        return call


class GraphCall(StaticInputCall):
    """`fn` captured into a CUDA graph after warm-up runs; each call copies its inputs in and replays."""

    def build(self) -> Fn:
        static = self.static_inputs()
        device = next(a.device for a in static if isinstance(a, torch.Tensor))
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                self.fn(*static)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph):
            outputs = self.fn(*static)

        def replay(*args: Any) -> Any:
            self.load(static, args)
            graph.replay()
            return tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, outputs)

        return replay


class CompileBackend(Backend):
    """torch.compile with static shapes; on CUDA the captured calls replay as CUDA graphs."""

    name = "compile"

    @property
    def label(self) -> str:
        return "compile+cudagraphs" if self.device.type == "cuda" else "compile"

    def compile(self, fn: Fn, name: str) -> Fn:
        return torch.compile(fn, dynamic=False)

    def capture(self, fn: Fn, example_inputs: Sequence[Any], name: str, buffers: Sequence[int] = ()) -> Fn:
        if self.device.type == "cuda":
            return self._register(GraphCall(fn, example_inputs, name, buffers))
        return self._register(StaticInputCall(fn, example_inputs, name, buffers))
