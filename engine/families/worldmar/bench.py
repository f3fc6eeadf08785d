"""WorldMAR frame sampling (nwrousell/world-mar `WorldMAR.sample`): the plain MAR sampler, which is the reference
algorithm step for step (`engine.families.worldmar.mar.MARSampler`), vs the same frame through a backend
(`engine.families.worldmar.sampler.BackendMARSampler`: static-shape units, the head's groups padded to the largest, on
CUDA the whole frame one CUDA graph), random weights, same inputs and noise, frames timed alternately.

Sizes: `full` is the reference's `world_mar_l` config (no public weights exist); `medium` keeps its token grid,
frames and sampler and narrows the transformer for a CPU. With `--backend eager` only the reference runs (the
eager world samples with it).
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch

from engine.backends.choose import make_backend
from engine.backends.device import device_name, dtype_name
from engine.core.noise import SeededNoise
from engine.families.diamond.bench import randomize, time_interleaved
from engine.families.worldmar.mar import MARSampler, MARSettings
from engine.families.worldmar.model import ACTION_DIM, WorldMAR
from engine.families.worldmar.sampler import BackendMARSampler

# configs/world_mar_l.yaml of the reference, without dropout (a model that samples with it runs eagerly).
FULL = {"num_frames": 4, "num_mem_frames": 2, "num_prev_frames": 3, "st_embed_dim": 512, "encoder_depth": 12,
        "encoder_num_heads": 8, "decoder_depth": 12, "decoder_num_heads": 8, "diffloss_w": 512, "diffloss_d": 3,
        "num_sampling_steps": "100", "proj_dropout": 0.0, "attn_dropout": 0.0}
MEDIUM = FULL | {"st_embed_dim": 256, "encoder_depth": 4, "decoder_depth": 4, "diffloss_w": 256,
                 "num_sampling_steps": "20"}
MAR_ITERS = 4


def frame_inputs(model: WorldMAR, device: torch.device) -> tuple[torch.Tensor, ...]:
    """One tick's sampler inputs: random latents and poses for the target, previous and memory frames."""
    generator = torch.Generator().manual_seed(0)
    frames = model.num_frames
    latents = torch.randn((1, frames, model.frame_tokens * model.patch_size**2, model.vae_embed_dim),
                          generator=generator)
    poses = torch.rand((1, frames, 5), generator=generator) * torch.tensor([20.0, 4.0, 20.0, 60.0, 360.0])
    nframes = torch.tensor([frames])
    actions = (torch.rand((1, ACTION_DIM), generator=generator) > 0.8).float()
    timestamps = -torch.arange(frames)[None]
    inputs = (latents, actions, model.plucker(poses, nframes), timestamps, nframes)
    return tuple(t.to(device) for t in inputs)


@torch.no_grad()
def run(device: torch.device, dtype: torch.dtype, size: str = "medium", ticks: int = 3, warmup: int = 1,
        backend: str = "eager") -> dict:
    config = FULL if size == "full" else MEDIUM
    with torch.device(device):
        model = WorldMAR(**config).eval()
    model = randomize(model, 0).to(dtype)  # not its zero-initialised adaLN gates: every unit must compute
    settings = MARSettings(mar_iters=MAR_ITERS)
    inputs = frame_inputs(model, device)
    samplers = {"reference": MARSampler(model, settings, SeededNoise(0, device))}
    chosen = make_backend(backend, device, dtype)
    if chosen.name != "eager":
        samplers[f"mar+{chosen.label}"] = BackendMARSampler(model, settings, SeededNoise(0, device), chosen)
        chosen.warm_up()

    def loop(sampler: MARSampler) -> Callable[[int], torch.Tensor]:
        def frame(_: int) -> torch.Tensor:
            sampler.noise.reset()  # every timed frame from the same draws, so the outputs compare
            return sampler.sample(*inputs)
        return frame

    results = time_interleaved({name: loop(s) for name, s in samplers.items()}, ticks, warmup, device)
    ref_times, ref_frames, _ = results.pop("reference")
    ref_ms = statistics.median(ref_times)
    rows = [{"sampler": name, "ms": round(statistics.median(times), 1),
             "fps": round(1000 / statistics.median(times), 2), "ms_all": [round(t, 1) for t in times],
             "speedup": round(ref_ms / statistics.median(times), 2),
             "max_abs_diff": max(float((a - b).abs().max()) for a, b in zip(ref_frames, frames, strict=True))}
            for name, (times, frames, _) in results.items()]
    return {"bench": "minecraft-mar", "device": device_name(device), "dtype": dtype_name(dtype), "size": size,
            "backend": chosen.label, "width": config["st_embed_dim"],
            "depth": [config["encoder_depth"], config["decoder_depth"]], "frames": model.num_frames, "tokens": model.frame_tokens, "mar_iters": MAR_ITERS,
            "head_steps": samplers["reference"].diffusion.num_timesteps,
            "parameters": sum(p.numel() for p in model.parameters()), "ticks": ticks,
            "reference_ms": round(ref_ms, 1), "reference_fps": round(1000 / ref_ms, 2), "reference_ms_all": [round(t, 1) for t in ref_times], "samplers": rows}


def print_table(result: dict) -> None:
    print(f"minecraft-mar  WorldMAR {result['size']} ({result['parameters']:,} parameters), {result['frames']} frames "
          f"x {result['tokens']} tokens, {result['mar_iters']} MAR iterations x {result['head_steps']} head steps, "
          f"{result['device']}, {result['dtype']}, {result['ticks']} frames")
    print(f"  {'reference':>14} {result['reference_ms']:>10} ms/frame   ({', '.join(map(str, result['reference_ms_all']))})")
    for row in result["samplers"]:
        print(f"  {row['sampler']:>14} {row['ms']:>10} ms/frame   ({', '.join(map(str, row['ms_all']))})")
        print(f"  speed-up {row['speedup']}x; latents: max |difference| {row['max_abs_diff']:.2e}")


def bench(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict:
    return run(device, dtype, size=args.size or ("full" if device.type == "cuda" else "medium"),
               ticks=args.ticks or (10 if device.type == "cuda" else 3), backend=args.backend)
