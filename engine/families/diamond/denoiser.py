"""DIAMOND's EDM denoiser (`models/diffusion/denoiser.py`, main and csgo branches).

EDM preconditioning (Karras et al. 2022) with DIAMOND's offset-noise term: the effective noise level is
sqrt(sigma^2 + sigma_offset_noise^2) at inference too. The conditioning frames are divided by sigma_data,
and the output is clamped and quantised to the 256 levels of a uint8 frame, so that a generated frame fed
back as conditioning is exactly what the display shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from engine.core.module import Placed
from engine.core.noise import NoiseSource
from engine.families.diamond.unet import InnerModel, InnerModelConfig, PrefixLoadable


@dataclass(frozen=True)
class DenoiserConfig:
    inner_model: InnerModelConfig
    sigma_data: float
    sigma_offset_noise: float
    noise_previous_obs: bool = False
    upsampling_factor: int | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DenoiserConfig:
        """From the official `agent.denoiser` / `agent.upsampler` config mapping."""
        return cls(inner_model=InnerModelConfig.from_dict(d["inner_model"]), sigma_data=float(d["sigma_data"]),
                   sigma_offset_noise=float(d["sigma_offset_noise"]),
                   noise_previous_obs=bool(d.get("noise_previous_obs", False)),
                   upsampling_factor=d.get("upsampling_factor"))


class Conditioners(NamedTuple):
    c_in: torch.Tensor  # (B, 1, 1, 1)
    c_out: torch.Tensor  # (B, 1, 1, 1)
    c_skip: torch.Tensor  # (B, 1, 1, 1)
    c_noise: torch.Tensor  # (B,)
    c_noise_cond: torch.Tensor  # (B,)


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Clamp to [-1, 1] and snap down to the 256 uint8 levels, with the reference's float32 op order."""
    u8 = x.clamp(-1, 1).add(1).div(2).mul(255).byte()
    return u8.float().div(255).mul(2).sub(1).to(x.dtype)


def apply_noise(x: torch.Tensor, sigma: torch.Tensor, sigma_offset_noise: float,
                noise: NoiseSource) -> torch.Tensor:
    """x + offset * N(b, c, 1, 1) + sigma * N(x.shape): two draws, in that order, even when offset is 0."""
    b, c = x.shape[:2]
    offset = sigma_offset_noise * noise.draw((b, c, 1, 1), x.device)
    return x + offset + noise.draw(tuple(x.shape), x.device) * sigma.reshape(-1, 1, 1, 1)


class Denoiser(Placed, nn.Module, PrefixLoadable):
    """D(x, sigma) = quantize(c_skip * x + c_out * F(c_in * x, c_noise, ...)), with F the inner model."""

    def __init__(self, cfg: DenoiserConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.inner_model = InnerModel(cfg.inner_model)

    def compute_conditioners(self, sigma: torch.Tensor, sigma_cond: torch.Tensor | None = None) -> Conditioners:
        """c_* for sigma of shape (B,) or 0-d (then broadcast over the batch)."""
        sigma_data, offset = self.cfg.sigma_data, self.cfg.sigma_offset_noise
        sigma = (sigma**2 + offset**2).sqrt()
        c_in = 1 / (sigma**2 + sigma_data**2).sqrt()
        c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
        c_out = sigma * c_skip.sqrt()
        c_noise = sigma.log() / 4
        c_noise_cond = sigma_cond.log() / 4 if sigma_cond is not None else torch.zeros_like(c_noise)
        return Conditioners(*(c.view(-1, 1, 1, 1) for c in (c_in, c_out, c_skip)), c_noise.view(-1),
                            c_noise_cond.view(-1))

    def model_output(self, noisy_next_obs: torch.Tensor, cs: Conditioners, obs: torch.Tensor,
                     act: torch.Tensor | None, sigma_cond: torch.Tensor | None = None) -> torch.Tensor:
        """The raw inner-model output F."""
        has_cond = sigma_cond is not None or self.inner_model.noise_cond_emb is not None
        c_noise_cond = cs.c_noise_cond if has_cond else None
        return self.inner_model(noisy_next_obs * cs.c_in, cs.c_noise, c_noise_cond, obs / self.cfg.sigma_data, act)

    def denoise_unquantized(self, noisy_next_obs: torch.Tensor, sigma: torch.Tensor, obs: torch.Tensor,
                            act: torch.Tensor | None = None,
                            sigma_cond: torch.Tensor | None = None) -> torch.Tensor:
        cs = self.compute_conditioners(sigma, sigma_cond)
        return cs.c_skip * noisy_next_obs + cs.c_out * self.model_output(noisy_next_obs, cs, obs, act, sigma_cond)

    @torch.no_grad()
    def denoise(self, noisy_next_obs: torch.Tensor, sigma: torch.Tensor, obs: torch.Tensor,
                act: torch.Tensor | None = None, sigma_cond: torch.Tensor | None = None) -> torch.Tensor:
        """The quantised denoised frame. obs: (B, T*C, H, W) oldest first (the upsampler: T full-res frames then
        the bicubic-upsampled low-res frame); act: (B, T) indices, (B, T, A) multi-hot, or None (upsampler);
        sigma_cond: (B,) noise level of obs (csgo branch only)."""
        return quantize(self.denoise_unquantized(noisy_next_obs, sigma, obs, act, sigma_cond))

    def apply_noise(self, x: torch.Tensor, sigma: torch.Tensor, sigma_offset_noise: float,
                    noise: NoiseSource) -> torch.Tensor:
        return apply_noise(x, sigma, sigma_offset_noise, noise)
