"""Hand-written kernels vs torch.compile of the same op, at the Oasis-500M shapes of a tick.

For each op: eager PyTorch (the reference), torch.compile of the reference, and the Triton kernel
(CUDA only; on CPU the kernel column is empty). A kernel earns its place in the model only where its
column beats the compiled one.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from engine.backends.device import device_name, dtype_name, sync
from engine.families.oasis.rotary import axial_angles, pixel_frequencies, rotation_table
from kernels.adaln_layernorm import adaln_layernorm, adaln_layernorm_reference, kernel_runs_on
from kernels.rope import rotate_pairs_fused, rotate_pairs_reference

# Oasis-500M: 9 x 16 token grid, width 1024, 16 heads of 64; a denoising step runs 1 frame, a prefill 31.
GRID, WIDTH, HEADS = (9, 16), 1024, 16


def time_ms(fn: Callable[[], torch.Tensor], device: torch.device, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def cases(device: torch.device, dtype: torch.dtype, frames: int) -> dict[str, tuple[Callable, Callable, tuple]]:
    gen = torch.Generator().manual_seed(0)
    h, w = GRID
    x = torch.randn((1, frames, h, w, WIDTH), generator=gen).to(device, dtype)
    shift, scale = (torch.randn((1, frames, 1, 1, WIDTH), generator=gen).to(device, dtype) for _ in range(2))
    head_dim = WIDTH // HEADS
    qk = torch.randn((1, frames, h, w, 2, HEADS, head_dim), generator=gen).to(device, dtype)
    angles = axial_angles(h, w, pixel_frequencies(head_dim // 2, 256).to(device))
    table = rotation_table(angles[:, :, None, None], dtype)
    return {"adaln_layernorm": (adaln_layernorm_reference, adaln_layernorm, (x, shift, scale)),
            "rope_spatial": (rotate_pairs_reference, rotate_pairs_fused, (qk, table))}


def run(device: torch.device, dtype: torch.dtype, repeats: int = 50) -> dict:
    rows = []
    for frames in (1, 31):
        for name, (reference, kernel, args) in cases(device, dtype, frames).items():
            compiled = torch.compile(reference, dynamic=False)
            eager_ms = time_ms(lambda f=reference, a=args: f(*a), device, repeats)
            compiled_ms = time_ms(lambda f=compiled, a=args: f(*a), device, repeats)
            kernel_ms = (time_ms(lambda f=kernel, a=args: f(*a), device, repeats) if kernel_runs_on(args[0])
                         else None)
            diff = (kernel(*args).float() - reference(*args).float()).abs().max().item()
            rows.append({"op": name, "frames": frames, "eager_ms": round(eager_ms, 4),
                         "compiled_ms": round(compiled_ms, 4),
                         "kernel_ms": None if kernel_ms is None else round(kernel_ms, 4),
                         "kernel_vs_compiled": None if kernel_ms is None else round(compiled_ms / kernel_ms, 2),
                         "max_abs_diff": diff})
    return {"bench": "kernels", "device": device_name(device), "dtype": dtype_name(dtype), "rows": rows}


def print_table(result: dict) -> None:
    print(f"kernels  {result['device']}, {result['dtype']} (ms per call, median)")
    header = ("op", "frames", "eager", "torch.compile", "kernel", "compile/kernel")
    print("  " + "".join(f"{h!s:>18}" for h in header))
    for r in result["rows"]:
        cells = (r["op"], r["frames"], r["eager_ms"], r["compiled_ms"], r["kernel_ms"] or "-",
                 r["kernel_vs_compiled"] or "-")
        print("  " + "".join(f"{c!s:>18}" for c in cells))
