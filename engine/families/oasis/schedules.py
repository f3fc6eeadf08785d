"""Noise schedules of the Oasis diffusion-forcing sampler (etched-ai/open-oasis `utils.py`, `generate.py`)."""

from __future__ import annotations

import torch


def sigmoid_beta_schedule(timesteps: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0) -> torch.Tensor:
    """Betas (timesteps,) float64 of the sigmoid schedule (Jabri et al., "Scalable Adaptive Computation").

    Like the reference, sigmoid(start) and sigmoid(end) are evaluated in float32 and then promoted.
    """
    steps = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64) / timesteps
    v_start = torch.tensor(start / tau).sigmoid().double()
    v_end = torch.tensor(end / tau).sigmoid().double()
    g = (-((steps * (end - start) + start) / tau).sigmoid() + v_end) / (v_end - v_start)
    g = g / g[0]
    return (1 - g[1:] / g[:-1]).clamp(0, 0.999)


def alphas_cumprod(timesteps: int) -> torch.Tensor:
    """Cumulative product of alphas (timesteps,) float32, computed in float32 as the reference does."""
    alphas = 1.0 - sigmoid_beta_schedule(timesteps).float()
    return torch.cumprod(alphas, dim=0)


def ddim_noise_levels(steps: int, max_noise_level: int = 1000) -> list[int]:
    """linspace(-1, max_level - 1, steps + 1) in float32, truncated toward zero (not rounded)."""
    levels = torch.linspace(-1, max_noise_level - 1, steps + 1, dtype=torch.float32)
    return [int(v) for v in levels.tolist()]
