"""Diffusion forcing for the Oasis DiT (Chen et al. 2024, "Diffusion Forcing"; open-oasis' DiT and schedule).

Every frame of a clip gets its own noise level, drawn independently (the dataset draws them), so the
causal DiT learns to denoise a frame given context at any noise level, which is what the sampler asks of
it (clean-ish context at the stabilization level, the newest frame walking down the DDIM levels). The
network predicts v = sqrt(a) * eps - sqrt(1 - a) * x0 under the sigmoid-beta schedule the sampler uses
(engine/families/oasis/schedules.py); the noise is clipped to +-noise_abs_max as generate.py clips it.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.families.oasis.dit import OasisDiT
from engine.families.oasis.schedules import alphas_cumprod
from engine.train.rng import BatchRandom


def v_target(x0: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    return alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0


def min_snr_weight(alpha_bar: torch.Tensor, snr_clip: float) -> torch.Tensor:
    """Min-SNR-gamma weighting (Hang et al. 2023) expressed for a v-prediction loss: min(snr, gamma) / (snr + 1)."""
    snr = alpha_bar / (1 - alpha_bar)
    return snr.clamp(max=snr_clip) / (snr + 1)


class OasisDiffusionForcing(nn.Module):
    """Training module around the DiT: forward(batch, rng) -> (loss, logs).

    batch: `latents` (B, T, C, h, w) already scaled, `actions` (B, T, A) (actions[t] conditions frame t),
    `noise_levels` (B, T) int64 in [0, timesteps).
    """

    def __init__(self, dit: OasisDiT, timesteps: int = 1000, snr_clip: float = 5.0, noise_abs_max: float = 20.0) -> None:
        super().__init__()
        self.dit = dit
        self.snr_clip = snr_clip
        self.noise_abs_max = noise_abs_max
        self.register_buffer("alphas_cumprod", alphas_cumprod(timesteps), persistent=False)

    def forward(self, batch: dict[str, torch.Tensor], rng: BatchRandom) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x0 = batch["latents"].float()
        levels = batch["noise_levels"]
        noise = rng.normal(x0.shape[1:]).clamp(-self.noise_abs_max, self.noise_abs_max)
        alpha_bar = self.alphas_cumprod[levels].view(*levels.shape, 1, 1, 1)
        noisy = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise
        prediction = self.dit(noisy, levels, batch["actions"])
        per_frame = (prediction.float() - v_target(x0, noise, alpha_bar)).pow(2).mean(dim=(2, 3, 4))
        weight = min_snr_weight(alpha_bar.view(levels.shape), self.snr_clip) if self.snr_clip > 0 else 1.0
        loss = (per_frame * weight).mean()
        return loss, {"mse_v": per_frame.mean().detach()}
