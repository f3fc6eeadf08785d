"""Device and dtype selection with one-line errors for what is not available."""

from __future__ import annotations

import os

import torch

from engine.errors import EngineError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when present, else CPU; asking for CUDA without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EngineError(f"--device {name}: no CUDA GPU is visible to PyTorch {torch.__version__} "
                          "(install a CUDA build of torch, or use --device cpu)")
    return device


def resolve_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """Default precision: bf16 on CUDA, fp32 on CPU (the reference-exact setting)."""
    if name is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise EngineError(f"--dtype {name}: expected one of {', '.join(DTYPES)}")
    if DTYPES[name] == torch.float16 and device.type == "cpu":
        raise EngineError("--dtype fp16 is not supported on CPU: use fp32 or bf16")
    return DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in DTYPES.items()}[dtype]


def leave_core_for_io(device: torch.device) -> None:
    """On CPU, keep one core free for the video encoder and the window.

    PyTorch's OpenMP workers spin while waiting; with every core busy in matmuls, a concurrent
    ffmpeg or render thread slows a tick down several times over.
    """
    cores = os.cpu_count() or 1
    if device.type == "cpu" and cores > 1 and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(cores - 1)


def sync(device: torch.device) -> None:
    """Wait for queued GPU work so wall-clock timings cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"
