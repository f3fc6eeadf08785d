"""Oasis tick: cached diffusion-forcing sampler vs the plain reference algorithm, same process.

All samplers get the same weights, settings and noise; timing starts once the window has filled and
slides (the steady state of play), ticks alternate between samplers, and the frames are compared.
With `--backend compile|trt|auto` the cached sampler also runs through that backend
(`BackendDiffusionForcing`, decoder included), after its warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from engine.backends.choose import make_backend
from engine.backends.device import device_name, dtype_name, sync
from engine.core.config import load_world_config
from engine.core.networks import network_kwargs
from engine.core.noise import SeededNoise
from engine.families.oasis.diffusion_forcing import (
    CachedDiffusionForcing,
    DiffusionForcingSettings,
    ReferenceDiffusionForcing,
)
from engine.families.oasis.dit import OasisDiT
from engine.families.oasis.sampler import BackendDiffusionForcing
from engine.families.oasis.vae import OasisVAE

MEDIUM_DIT = {"hidden_size": 256, "depth": 4, "num_heads": 4}
MEDIUM_VAE = {"dec_dim": 256, "dec_depth": 4, "dec_heads": 4, "enc_dim": 256, "enc_depth": 2, "enc_heads": 4}


def build_models(size: str, window: int, device: torch.device, dtype: torch.dtype) -> tuple[OasisDiT, OasisVAE]:
    """Random-weight networks in the Oasis-500M geometry; `medium` narrows and shallows them."""
    cfg = load_world_config("minecraft")
    dit_kwargs = network_kwargs(cfg, "dit") | {"max_frames": window}
    vae_kwargs = network_kwargs(cfg, "vae")
    if size == "medium":
        dit_kwargs |= MEDIUM_DIT
        vae_kwargs |= MEDIUM_VAE
    torch.manual_seed(0)
    with torch.device(device):
        dit, vae = OasisDiT(**dit_kwargs), OasisVAE(**vae_kwargs)
    for module in (dit, vae):
        for param in module.parameters():
            if param.requires_grad and param.dim() > 1:
                param.data.normal_(0, param.shape[1] ** -0.5)
    return dit.to(dtype).eval(), vae.to(dtype).eval()


@torch.no_grad()
def time_interleaved(samplers: dict, prompt: torch.Tensor, action: torch.Tensor, warmup: int, ticks: int,
                     device: torch.device) -> dict[str, tuple[list[float], list[torch.Tensor]]]:
    """Warm every sampler up past the window, then time their ticks alternately.

    Alternating keeps the ratio honest on a machine whose speed drifts (shared or throttled cores).
    """
    for sampler in samplers.values():
        sampler.reset(prompt)
        for _ in range(warmup):
            sampler.step(action)
    results = {name: ([], []) for name in samplers}
    for _ in range(ticks):
        for name, sampler in samplers.items():
            sync(device)
            t0 = time.perf_counter()
            frame = sampler.step(action)
            sync(device)
            results[name][0].append((time.perf_counter() - t0) * 1000)
            results[name][1].append(frame)
    return results


def time_decode(decode, tokens: torch.Tensor, device: torch.device, repeats: int = 3) -> float:
    """Median ms of `repeats` decodes after one untimed call."""
    decode(tokens)
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        decode(tokens)
        sync(device)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


@torch.no_grad()
def run(device: torch.device, dtype: torch.dtype, size: str = "medium", window: int = 8, steps: int = 10,
        ticks: int = 5, backend: str = "eager") -> dict:
    """Reference, cached (eager) and, with a backend other than eager, cached through that backend."""
    dit, vae = build_models(size, window, device, dtype)
    settings = DiffusionForcingSettings(ddim_steps=steps, max_frames=window)
    latent_shape = (1, 1, dit.in_channels, *(g * dit.patch_size for g in dit.grid))
    prompt = torch.randn(latent_shape, generator=torch.Generator().manual_seed(1)).to(device)
    action = torch.zeros((1, dit.external_cond_dim), device=device)
    action[0, 11] = 1.0
    warmup = window
    samplers = {name: cls(dit, settings, SeededNoise(0, device))
                for name, cls in (("reference", ReferenceDiffusionForcing), ("cached", CachedDiffusionForcing))}
    tokens = torch.zeros((1, vae.grid[0] * vae.grid[1], vae.latent_dim), device=device, dtype=dtype)
    decoders = {"eager": vae.decode}
    chosen = make_backend(backend, device, dtype)
    if chosen.name != "eager":
        fast = BackendDiffusionForcing(dit, settings, SeededNoise(0, device), backend=chosen)
        decoders[chosen.label] = chosen.compile_step(vae.decode, (tokens,), "vae_decoder")
        fast.warm_up()
        samplers[f"cached+{chosen.label}"] = fast
    results = time_interleaved(samplers, prompt, action, warmup, ticks, device)
    decode_ms = {name: time_decode(decode, tokens, device) for name, decode in decoders.items()}
    reference = results.pop("reference")
    ref_ms = statistics.median(reference[0])
    ref_tick = ref_ms + decode_ms["eager"]
    rows = []
    for name, (times, frames) in results.items():
        sample_ms = statistics.median(times)
        decode = decode_ms[name.removeprefix("cached+")] if "+" in name else decode_ms["eager"]
        tick_ms = sample_ms + decode
        rows.append({"sampler": name, "sample_ms": round(sample_ms, 2), "decode_ms": round(decode, 2),
                     "tick_ms": round(tick_ms, 2), "fps": round(1000 / tick_ms, 2),
                     "sample_speedup": round(ref_ms / sample_ms, 2), "tick_speedup": round(ref_tick / tick_ms, 2),
                     "max_abs_diff": max((a - b).abs().max().item()
                                         for a, b in zip(reference[1], frames, strict=True))})
    cached = rows[0]
    return {
        "bench": "minecraft", "device": device_name(device), "dtype": dtype_name(dtype), "size": size,
        "backend": chosen.label, "width": dit.x_embedder.proj.out_channels, "depth": dit.depth, "window": window,
        "steps": steps, "ticks": ticks, "reference_sample_ms": round(ref_ms, 2),
        "reference_decode_ms": round(decode_ms["eager"], 2), "reference_tick_ms": round(ref_tick, 2),
        "reference_fps": round(1000 / ref_tick, 2), "samplers": rows,
        "cached_sample_ms": cached["sample_ms"], "decode_ms": cached["decode_ms"], "cached_fps": cached["fps"],
        "sample_speedup": cached["sample_speedup"], "tick_speedup": rows[-1]["tick_speedup"],
        "theoretical_speedup": round(steps * window / (window - 1 + steps), 2),
        "max_abs_diff": max(row["max_abs_diff"] for row in rows),
    }


def print_table(result: dict) -> None:
    print(f"minecraft  {result['size']} DiT (width {result['width']}, depth {result['depth']}), window "
          f"{result['window']}, {result['steps']} steps, {result['device']}, {result['dtype']}, "
          f"backend {result['backend']}")
    header = ("sampler", "sample ms", "decode ms", "tick ms", "fps", "tick speed-up")
    rows = [("reference", result["reference_sample_ms"], result["reference_decode_ms"], result["reference_tick_ms"],
             result["reference_fps"], 1.0)]
    rows += [(r["sampler"], r["sample_ms"], r["decode_ms"], r["tick_ms"], r["fps"], r["tick_speedup"])
             for r in result["samplers"]]
    for row in (header, *rows):
        print("  " + "".join(f"{cell!s:>22}" for cell in row))
    print(f"  theory (frame-passes, cached vs reference) {result['theoretical_speedup']}x; "
          f"max |difference| vs reference {result['max_abs_diff']:.2e}")


def bench(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict:
    """`python -m bench minecraft`: medium size, window 8, 5 ticks on CPU; full size, window 32, 20 ticks on CUDA."""
    on_gpu = device.type == "cuda"
    return run(device, dtype, size=args.size or ("full" if on_gpu else "medium"), window=args.window or (32 if on_gpu else 8),
               steps=args.steps, ticks=args.ticks or (20 if on_gpu else 5), backend=args.backend)
