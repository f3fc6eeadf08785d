"""Memory retrieval: vectorised overlap scoring + greedy top-k vs the reference per-pose loop.

A walk of a player (heading drifting, moving at walking speed, looking around) provides the stored
poses; its last pose is the target and the candidate list is laid out as the dataloader does
(previous frame first, then the older frames). Both implementations get the same points; the
selections are compared.
"""

from __future__ import annotations

import statistics
import time

import torch

from bench.device import device_name, sync
from engine.memory.reference_retrieval import reference_retrieve
from engine.memory.retrieval import generate_points_in_sphere, retrieve

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


@torch.no_grad()
def run(device: torch.device, n_frames_list: tuple[int, ...] = (100, 1000, 10000), points: int = 10000, k: int = 3,
        repeats: int = 5, num_prev_frames: int = 1, min_overlap: float = 0.0, seed: int = 0) -> dict:
    """Time both implementations for each number of stored frames; the reference runs once on the CPU."""
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    sphere = generate_points_in_sphere(points, 30.0, generator=gen)
    rows = []
    for n in n_frames_list:
        walk = player_walk(n + 1, gen)
        target, others = walk[-1], torch.cat([walk[-2:-1], walk[:-2]])
        t0 = time.perf_counter()
        expected = reference_retrieve(target, others, sphere, num_prev_frames, min_overlap, k)
        ref_ms = (time.perf_counter() - t0) * 1000
        args = (target.to(device), others.to(device), sphere.to(device), num_prev_frames, min_overlap, k)
        _ = retrieve(*args).indices  # warm-up
        times = []
        for _ in range(repeats):
            sync(device)
            t0 = time.perf_counter()
            result = retrieve(*args)
            sync(device)
            times.append((time.perf_counter() - t0) * 1000)
        got = result.indices.cpu()
        fast_ms = statistics.median(times)
        rows.append({"frames": n, "visible_points": int(result.overlap.target_in_fov.sum()),
                     "reference_ms": round(ref_ms, 2), "vectorised_ms": round(fast_ms, 3),
                     "speedup": round(ref_ms / fast_ms, 1), "identical": bool(torch.equal(got, expected)),
                     "indices": got.tolist()})
    return {"bench": "retrieval", "device": device_name(device), "points": points, "k": k,
            "num_prev_frames": num_prev_frames, "repeats": repeats, "rows": rows,
            "speedups": {str(r["frames"]): r["speedup"] for r in rows},
            "all_identical": all(r["identical"] for r in rows)}


def print_table(result: dict) -> None:
    print(f"retrieval  {result['points']} sphere points, k={result['k']}, "
          f"{result['num_prev_frames']} forced previous frame(s), {result['device']}")
    header = ("stored frames", "visible pts", "reference ms", "vectorised ms", "speed-up", "identical")
    print("  " + "".join(f"{h:>15}" for h in header))
    for r in result["rows"]:
        cells = (r["frames"], r["visible_points"], r["reference_ms"], r["vectorised_ms"], f"{r['speedup']}x",
                 r["identical"])
        print("  " + "".join(f"{c!s:>15}" for c in cells))
