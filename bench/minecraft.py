"""Oasis tick: cached diffusion-forcing sampler vs the plain reference algorithm, same process.

Both samplers get the same weights, settings and noise; timing starts once the window has
filled and slides (the steady state of play), and the frames of both are compared.
"""

from __future__ import annotations

import statistics
import time

import torch

from bench.device import device_name, sync
from engine.backends.device import dtype_name
from engine.models.oasis_dit import OasisDiT
from engine.models.oasis_vae import OasisVAE
from engine.sampling.diffusion_forcing import (
    CachedDiffusionForcing,
    DiffusionForcingSettings,
    ReferenceDiffusionForcing,
)
from engine.sampling.noise import SeededNoise
from engine.worlds.config import load_world_config
from engine.worlds.networks import network_kwargs

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


@torch.no_grad()
def run(device: torch.device, dtype: torch.dtype, size: str = "medium", window: int = 8, steps: int = 10,
        ticks: int = 5) -> dict:
    dit, vae = build_models(size, window, device, dtype)
    settings = DiffusionForcingSettings(ddim_steps=steps, max_frames=window)
    latent_shape = (1, 1, dit.in_channels, *(g * dit.patch_size for g in dit.grid))
    prompt = torch.randn(latent_shape, generator=torch.Generator().manual_seed(1)).to(device)
    action = torch.zeros((1, dit.external_cond_dim), device=device)
    action[0, 11] = 1.0
    warmup = window
    samplers = {name: cls(dit, settings, SeededNoise(0, device))
                for name, cls in (("reference", ReferenceDiffusionForcing), ("cached", CachedDiffusionForcing))}
    results = time_interleaved(samplers, prompt, action, warmup, ticks, device)
    tokens = torch.zeros((1, vae.grid[0] * vae.grid[1], vae.latent_dim), device=device, dtype=dtype)
    vae.decode(tokens)
    sync(device)
    t0 = time.perf_counter()
    vae.decode(tokens)
    sync(device)
    decode_ms = (time.perf_counter() - t0) * 1000
    ref_ms = statistics.median(results["reference"][0])
    fast_ms = statistics.median(results["cached"][0])
    max_diff = max((a - b).abs().max().item() for a, b in zip(results["reference"][1], results["cached"][1], strict=True))
    theory = steps * window / (window - 1 + steps)
    return {
        "bench": "minecraft", "device": device_name(device), "dtype": dtype_name(dtype), "size": size,
        "width": dit.x_embedder.proj.out_channels, "depth": dit.depth, "window": window, "steps": steps,
        "ticks": ticks, "reference_sample_ms": round(ref_ms, 2), "cached_sample_ms": round(fast_ms, 2),
        "decode_ms": round(decode_ms, 2), "reference_fps": round(1000 / (ref_ms + decode_ms), 2),
        "cached_fps": round(1000 / (fast_ms + decode_ms), 2), "sample_speedup": round(ref_ms / fast_ms, 2),
        "tick_speedup": round((ref_ms + decode_ms) / (fast_ms + decode_ms), 2),
        "theoretical_speedup": round(theory, 2), "max_abs_diff": max_diff,
    }


def print_table(result: dict) -> None:
    rows = [
        ("sampler", "sample ms", "tick ms (+decode)", "fps"),
        ("reference", result["reference_sample_ms"], round(result["reference_sample_ms"] + result["decode_ms"], 2),
         result["reference_fps"]),
        ("cached", result["cached_sample_ms"], round(result["cached_sample_ms"] + result["decode_ms"], 2),
         result["cached_fps"]),
    ]
    print(f"minecraft  {result['size']} DiT (width {result['width']}, depth {result['depth']}), window "
          f"{result['window']}, {result['steps']} steps, {result['device']}, {result['dtype']}")
    for row in rows:
        print("  " + "".join(f"{cell!s:>20}" for cell in row))
    print(f"  speed-up: sampler {result['sample_speedup']}x (theory {result['theoretical_speedup']}x), "
          f"tick {result['tick_speedup']}x; max |difference| {result['max_abs_diff']:.2e}")
