"""`--backend auto|eager|compile|trt`: build the backend a session runs its network calls through."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from engine.backends.base import Backend
from engine.backends.compiled import CompileBackend, compile_available
from engine.errors import EngineError

BACKENDS = ("auto", "eager", "compile", "trt")
ENGINES_ROOT = Path(__file__).resolve().parents[2] / "engines"
# On CPU torch.compile makes ticks faster but its warm-up takes minutes (bench/RESULTS.md), so `auto`
# leaves it to be asked for by name there.
CPU_COMPILE_NOT_AUTO = "not chosen by auto on CPU (its first warm-up takes minutes); ask for --backend compile"


def make_backend(name: str, device: torch.device, dtype: torch.dtype, *, world: str | None = None,
                 checkpoint_files: Mapping[str, Path] | None = None, engines_root: Path | None = None) -> Backend:
    """The backend `name` for this run; `auto` takes TensorRT, then torch.compile (CUDA), then eager.

    `auto` says in `Backend.reason` why it chose what it chose; asking for an unavailable backend by
    name is a one-line EngineError.
    """
    if name not in BACKENDS:
        raise EngineError(f"--backend {name}: expected one of {', '.join(BACKENDS)}")
    root = engines_root or ENGINES_ROOT
    if name == "eager":
        return Backend(device, dtype)
    if name == "compile":
        problem = compile_available(device)
        if problem:
            raise EngineError(f"--backend compile: {problem}")
        return CompileBackend(device, dtype)
    if name == "trt":
        return _trt(device, dtype, world, checkpoint_files, root, reason="")
    skipped = []
    if device.type == "cuda" and world is not None:
        try:
            return _trt(device, dtype, world, checkpoint_files, root, reason="auto: TensorRT engines found")
        except EngineError as exc:
            skipped.append(f"trt: {exc}")
    problem = CPU_COMPILE_NOT_AUTO if device.type == "cpu" else compile_available(device)
    if problem is None:
        return CompileBackend(device, dtype, reason="; ".join(["auto", *skipped]))
    skipped.append(f"compile: {problem}")
    return Backend(device, dtype, reason="; ".join(["auto", *skipped]))


def _trt(device: torch.device, dtype: torch.dtype, world: str | None, checkpoint_files: Mapping[str, Path] | None,
         root: Path, reason: str) -> Backend:
    from engine.backends.trt_backend import TrtBackend, engines_folder

    if world is None:
        raise EngineError("--backend trt needs a world (its engines live in engines/<world>/)")
    backend = TrtBackend(device, dtype, world, engines_folder(root, world), checkpoint_files or {}, reason)
    if reason:  # auto: only when every engine of the world can be used as it is
        problem = backend.first_problem()
        if problem:
            raise EngineError(problem)
    return backend
