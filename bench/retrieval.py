"""Memory retrieval: vectorised overlap scoring + greedy top-k vs the reference per-pose loop.

A walk of a player (heading drifting, moving at walking speed, looking around) provides the stored
poses; its last pose is the target and the candidate list is laid out as the dataloader does
(previous frame first, then the older frames). Every implementation gets the same points; the
selections are compared with the reference's.

Timing: the reference loop (always on the CPU, as the reference runs) and the vectorised runs are
interleaved in rounds and each keeps its fastest time, which is what other processes on a shared
machine disturb least. On CUDA the PyTorch path and, when Triton is installed, the kernel path
(`kernels.fov_overlap`) are timed. On a machine whose cores other processes keep busy, multi-threaded
CPU ops stall waiting for descheduled threads while the reference's small ops run on one thread:
`OMP_NUM_THREADS=1 python -m bench retrieval` compares the two on equal terms there. (Changing
`torch.set_num_threads` inside the process instead slows every later op down, so the bench does not.)
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from engine.backends.device import device_name, sync
from engine.memory.reference_retrieval import reference_retrieve
from engine.memory.retrieval import generate_points_in_sphere, retrieve, use_kernel

WALK_SPEED = 4.317 / 20  # blocks per tick (Minecraft walking speed at 20 ticks/s)


def player_walk(n: int, generator: torch.Generator) -> torch.Tensor:
    """`(n, 5)` poses of a wandering player: heading and pitch drift, moving about half the time."""
    yaw = (torch.randn(n, generator=generator) * 4).cumsum(0)
    pitch = (torch.randn(n, generator=generator) * 2).cumsum(0).clamp(-60, 60)
    moving = (torch.rand(n, generator=generator) < 0.5).float() * WALK_SPEED
    rad = torch.deg2rad(yaw)
    step = torch.stack([-torch.sin(rad) * moving, torch.randn(n, generator=generator) * 0.02,
                        torch.cos(rad) * moving], dim=1)
    pos = step.cumsum(0) + torch.tensor([0.0, 64.0, 0.0])
    return torch.cat([pos, pitch[:, None], yaw[:, None]], dim=1)


def _fastest_ms(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, (time.perf_counter() - t0) * 1000)
    return best


def variants(device: torch.device) -> list[tuple[str, str]]:
    """(label, backend) of the vectorised runs: the PyTorch path, and on CUDA with Triton the kernel."""
    runs = [("torch", "torch")]
    if device.type == "cuda" and use_kernel(torch.empty(0, device=device), "auto"):
        runs.append(("triton", "triton"))
    return runs


@torch.no_grad()
def run(device: torch.device, n_frames_list: tuple[int, ...] = (100, 1000, 10000), points: int = 10000, k: int = 3,
        rounds: int = 3, repeats: int = 5, num_prev_frames: int = 1, min_overlap: float = 0.0, seed: int = 0) -> dict:
    """Time the reference and the vectorised variant(s) for each number of stored frames."""
    device = torch.device(device)
    runs = variants(device)
    gen = torch.Generator().manual_seed(seed)
    sphere = generate_points_in_sphere(points, 30.0, generator=gen)
    rows = []
    for n in n_frames_list:
        walk = player_walk(n + 1, gen)
        target, others = walk[-1], torch.cat([walk[-2:-1], walk[:-2]])
        expected = reference_retrieve(target, others, sphere, num_prev_frames, min_overlap, k)
        args = (target.to(device), others.to(device), sphere.to(device), num_prev_frames, min_overlap, k)
        results = {label: retrieve(*args, backend=backend) for label, backend in runs}  # warm-up, kernel compile
        ref_ms = float("inf")
        fast_ms = {label: float("inf") for label, _ in runs}
        for _ in range(rounds):
            t0 = time.perf_counter()
            reference_retrieve(target, others, sphere, num_prev_frames, min_overlap, k)
            ref_ms = min(ref_ms, (time.perf_counter() - t0) * 1000)
            for label, backend in runs:
                fast_ms[label] = min(fast_ms[label], _fastest_ms(
                    lambda a=args, b=backend: retrieve(*a, backend=b).indices, device, repeats))
        row = {"frames": n, "visible_points": int(next(iter(results.values())).overlap.target_in_fov.sum()),
               "reference_ms": round(ref_ms, 2), "expected": expected.tolist()}
        for label, _ in runs:
            row[label] = {"ms": round(fast_ms[label], 3), "speedup": round(ref_ms / fast_ms[label], 1),
                          "identical": bool(torch.equal(results[label].indices.cpu(), expected))}
        rows.append(row)
    labels = [label for label, _ in runs]
    return {"bench": "retrieval", "device": device_name(device), "points": points, "k": k,
            "num_prev_frames": num_prev_frames, "rounds": rounds, "repeats": repeats, "variants": labels,
            "rows": rows, "speedups": {label: {str(r["frames"]): r[label]["speedup"] for r in rows} for label in labels},
            "all_identical": all(r[label]["identical"] for r in rows for label in labels)}


def print_table(result: dict) -> None:
    print(f"retrieval  {result['points']} sphere points, k={result['k']}, "
          f"{result['num_prev_frames']} forced previous frame(s), {result['device']}; fastest of "
          f"{result['rounds']} interleaved rounds (reference on the CPU)")
    header = ["stored frames", "visible pts", "reference ms"]
    for label in result["variants"]:
        header += [f"{label} ms", "speed-up", "identical"]
    widths = [max(15, len(h) + 2) for h in header]
    print("  " + "".join(f"{h:>{w}}" for h, w in zip(header, widths, strict=True)))
    for r in result["rows"]:
        cells = [r["frames"], r["visible_points"], r["reference_ms"]]
        for label in result["variants"]:
            cells += [r[label]["ms"], f"{r[label]['speedup']}x", r[label]["identical"]]
        print("  " + "".join(f"{c!s:>{w}}" for c, w in zip(cells, widths, strict=True)))
