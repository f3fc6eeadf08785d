"""Training loss of the Oasis ViT VAE, as latent-diffusion autoencoders train (Rombach et al. 2022): a pixel
reconstruction term in [-1, 1] on a posterior sample plus a small KL term that keeps the posterior near N(0, 1)."""

from __future__ import annotations

import torch
from torch import nn

from engine.eval.metrics import psnr_db
from engine.families.oasis.vae import OasisVAE
from engine.train.rng import BatchRandom


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)) of every element."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar)


class OasisVAELoss(nn.Module):
    """Training module around the VAE: forward(batch, rng) -> (loss, logs) for `frames` (B, 3, H, W) in [-1, 1].

    loss = reconstruction ("l1" or "mse", per pixel value) + kl_weight * KL (per latent value).
    """

    def __init__(self, vae: OasisVAE, kl_weight: float, reconstruction: str = "l1") -> None:
        super().__init__()
        self.vae = vae
        self.kl_weight = kl_weight
        self.reconstruction = reconstruction

    def forward(self, batch: dict[str, torch.Tensor], rng: BatchRandom) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        frames = batch["frames"].float()
        mean, logvar = self.vae.encode(frames)
        mean, logvar = mean.float(), logvar.float()
        sample = mean + torch.exp(0.5 * logvar) * rng.normal(mean.shape[1:])
        error = self.vae.decode(sample).float() - frames
        mse = error.pow(2).mean()
        reconstruction = error.abs().mean() if self.reconstruction == "l1" else mse
        kl = gaussian_kl(mean, logvar).mean()
        logs = {"reconstruction": reconstruction.detach(), "kl": kl.detach(), "psnr": psnr_db(mse.detach()),
                "latent_std": mean.detach().std()}
        return reconstruction + self.kl_weight * kl, logs
