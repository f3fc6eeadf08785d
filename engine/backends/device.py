"""Device and dtype selection with one-line errors for what is not available."""

from __future__ import annotations

import os
import re

import torch

from engine.errors import EngineError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DEVICE_NAME = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device_name(name: str) -> str:
    """`name` if it is auto, cpu, cuda or cuda:N, else an EngineError saying so."""
    if not isinstance(name, str) or DEVICE_NAME.fullmatch(name) is None:
        raise EngineError(f"--device {name}: expected auto, cpu, cuda or cuda:N")
    return name


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when present, else CPU; asking for CUDA without a GPU is an error."""
    if check_device_name(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EngineError(f"--device {name}: no CUDA GPU is visible to PyTorch {torch.__version__} "
                          "(install a CUDA build of torch, or use --device cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise EngineError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                          f"cuda:0..cuda:{torch.cuda.device_count() - 1}")
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


def physical_memory() -> int:
    """Bytes of RAM of this machine."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 40


def device_memory(device: torch.device) -> int:
    """Bytes of memory of `device`: the GPU's, or this machine's RAM."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[1]
    return physical_memory()


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
