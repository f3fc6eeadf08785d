"""DIAMOND's EDM sampler (`DiffusionSampler.sample`, main and csgo branches): Euler or Heun steps on a
Karras schedule, with churn, and on the csgo branch `s_cond` re-noising of the conditioning frames.

Two versions that give bit-identical results for the same denoiser and the same noise source:
- `sample_reference` follows the reference step for step (schedule built and gated on every call);
- `EdmSampler` is the one used in play: the schedule, the churn gating and every per-step scalar are
  computed once at construction, so a tick creates no tensors besides the frames and never reads a
  device value back to the host (the reference's `s_tmin <= sigma <= s_tmax` on a device tensor is a
  host synchronisation per step on a GPU); the zero-scaled offset-noise term of the conditioning noise is
  dropped while its draw is still consumed, keeping the noise stream identical.
Every random draw goes through an `engine.core.noise.NoiseSource`, in the reference's order: the initial
x, then per step the churn draw (when gamma > 0), then the two conditioning-noise draws (when s_cond > 0).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from engine.core.noise import NoiseSource
from engine.families.diamond.denoiser import apply_noise


class DenoiseFn(Protocol):
    def __call__(self, noisy_next_obs: torch.Tensor, sigma: torch.Tensor, obs: torch.Tensor,
                 act: torch.Tensor | None, sigma_cond: torch.Tensor | None) -> torch.Tensor:
        """The (quantised) denoised frame, as `Denoiser.denoise`."""
        ...


@dataclass(frozen=True)
class EdmSamplerConfig:
    num_steps_denoising: int
    sigma_min: float
    sigma_max: float
    rho: float
    order: int = 1
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = math.inf
    s_noise: float = 1.0
    s_cond: float = 0.0

    def __post_init__(self) -> None:
        if self.order not in (1, 2):
            raise ValueError(f"order must be 1 (Euler) or 2 (Heun), got {self.order}")
        if self.num_steps_denoising < 1:
            raise ValueError(f"num_steps_denoising must be at least 1, got {self.num_steps_denoising}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EdmSamplerConfig:
        """From the official `diffusion_sampler` mapping (`s_tmax` may be the string 'inf')."""
        names = cls.__dataclass_fields__
        args = {k: (v if k in ("num_steps_denoising", "order") else float(v)) for k, v in d.items() if k in names}
        return cls(**args)

    @property
    def gamma(self) -> float:
        """The churn factor applied to steps whose sigma lies in [s_tmin, s_tmax]."""
        return min(self.s_churn / self.num_steps_denoising, 2**0.5 - 1)


def build_sigmas(num_steps: int, sigma_min: float, sigma_max: float, rho: float,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """Karras schedule in float32 (as the reference computes it), followed by a final 0."""
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    lin = torch.linspace(0, 1, num_steps, device=device)
    sigmas = (max_inv_rho + lin * (min_inv_rho - max_inv_rho)) ** rho
    return torch.cat((sigmas, sigmas.new_zeros(1)))


def _flatten_frames(prev_obs: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    b, t, c, h, w = prev_obs.shape
    return prev_obs.reshape(b, t * c, h, w), (b, c, h, w)


def sample_reference(denoise: DenoiseFn, prev_obs: torch.Tensor, prev_act: torch.Tensor | None,
                     cfg: EdmSamplerConfig, noise: NoiseSource) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The plain algorithm, step for step. prev_obs (B, T, C, H, W) oldest first; returns (x, trajectory)
    with trajectory = [initial noise, x after each step]."""
    device = prev_obs.device
    prev_obs, (b, c, h, w) = _flatten_frames(prev_obs)
    s_in = torch.ones(b, device=device)
    gamma_ = cfg.gamma
    sigmas = build_sigmas(cfg.num_steps_denoising, cfg.sigma_min, cfg.sigma_max, cfg.rho, device)
    x = noise.draw((b, c, h, w), device)
    trajectory = [x]
    for sigma, next_sigma in itertools.pairwise(sigmas):
        gamma = gamma_ if cfg.s_tmin <= sigma <= cfg.s_tmax else 0
        sigma_hat = sigma * (gamma + 1)
        if gamma > 0:
            eps = noise.draw(tuple(x.shape), device) * cfg.s_noise
            x = x + eps * (sigma_hat**2 - sigma**2) ** 0.5
        if cfg.s_cond > 0:
            sigma_cond = torch.full((b,), fill_value=cfg.s_cond, device=device)
            prev_obs = apply_noise(prev_obs, sigma_cond, 0.0, noise)
        else:
            sigma_cond = None
        denoised = denoise(x, sigma, prev_obs, prev_act, sigma_cond)
        d = (x - denoised) / sigma_hat
        dt = next_sigma - sigma_hat
        if cfg.order == 1 or next_sigma == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            denoised_2 = denoise(x_2, next_sigma * s_in, prev_obs, prev_act, sigma_cond)
            d_2 = (x_2 - denoised_2) / next_sigma
            x = x + (d + d_2) / 2 * dt
        trajectory.append(x)
    return x, trajectory


@dataclass(frozen=True)
class _Step:
    sigma: torch.Tensor  # 0-d, what the first denoiser call of the step gets
    sigma_hat: torch.Tensor  # 0-d
    dt: torch.Tensor  # 0-d
    next_sigma: torch.Tensor  # 0-d
    next_sigma_batch: torch.Tensor  # (B,), what Heun's second call gets
    churn_std: torch.Tensor | None  # 0-d, (sigma_hat^2 - sigma^2)^0.5 when the step churns
    heun: bool


class EdmSampler:
    """The sampler used in play: same arithmetic as `sample_reference`, per-tick work reduced to the frames."""

    def __init__(self, denoise: DenoiseFn, cfg: EdmSamplerConfig, batch_size: int,
                 device: torch.device | str = "cpu") -> None:
        self.denoise = denoise
        self.cfg = cfg
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.sigmas = build_sigmas(cfg.num_steps_denoising, cfg.sigma_min, cfg.sigma_max, cfg.rho, self.device)
        self.steps = self._plan(self.sigmas.cpu())
        self.sigma_cond = (torch.full((batch_size,), cfg.s_cond, device=self.device) if cfg.s_cond > 0
                           else None)
        self.sigma_cond_pixels = None if self.sigma_cond is None else self.sigma_cond.reshape(-1, 1, 1, 1)

    def _plan(self, sigmas: torch.Tensor) -> list[_Step]:
        """Gating and per-step scalars with the reference's float32 ops, once, on the host."""
        cfg, on = self.cfg, self.device
        ones = torch.ones(self.batch_size)
        steps = []
        for sigma, next_sigma in itertools.pairwise(sigmas):
            gamma = cfg.gamma if cfg.s_tmin <= sigma <= cfg.s_tmax else 0
            sigma_hat = sigma * (gamma + 1)
            churn = (sigma_hat**2 - sigma**2) ** 0.5 if gamma > 0 else None
            steps.append(_Step(sigma=sigma.to(on), sigma_hat=sigma_hat.to(on), dt=(next_sigma - sigma_hat).to(on),
                               next_sigma=next_sigma.to(on), next_sigma_batch=(next_sigma * ones).to(on),
                               churn_std=None if churn is None else churn.to(on),
                               heun=cfg.order == 2 and bool(next_sigma != 0)))
        return steps

    @torch.no_grad()
    def sample(self, prev_obs: torch.Tensor, prev_act: torch.Tensor | None, noise: NoiseSource,
               keep_trajectory: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """prev_obs (B, T, C, H, W) oldest first; returns (x, trajectory), the trajectory empty unless asked."""
        prev_obs, (b, c, h, w) = _flatten_frames(prev_obs)
        if b != self.batch_size:
            raise ValueError(f"this sampler was built for batch {self.batch_size}, got {b}")
        device, s_noise = prev_obs.device, self.cfg.s_noise
        x = noise.draw((b, c, h, w), device)
        trajectory = [x] if keep_trajectory else []
        for step in self.steps:
            if step.churn_std is not None:
                x = x + noise.draw((b, c, h, w), device) * s_noise * step.churn_std
            if self.sigma_cond_pixels is not None:
                noise.draw((b, prev_obs.shape[1], 1, 1), device)  # the offset-noise draw, scaled by 0 in the reference
                prev_obs = prev_obs + noise.draw(tuple(prev_obs.shape), device) * self.sigma_cond_pixels
            denoised = self.denoise(x, step.sigma, prev_obs, prev_act, self.sigma_cond)
            d = (x - denoised) / step.sigma_hat
            if step.heun:
                x_2 = x + d * step.dt
                denoised_2 = self.denoise(x_2, step.next_sigma_batch, prev_obs, prev_act, self.sigma_cond)
                d_2 = (x_2 - denoised_2) / step.next_sigma
                x = x + (d + d_2) / 2 * step.dt
            else:
                x = x + d * step.dt
            if keep_trajectory:
                trajectory.append(x)
        return x, trajectory
