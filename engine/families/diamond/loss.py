"""DIAMOND's denoiser loss (eloialonso/diamond `Denoiser.forward`, main and csgo branches; Karras et al. 2022).

For each of the `T - n` predicted steps of a segment: sigma ~ exp(N(loc, scale^2)) clipped to
[sigma_min, sigma_max]; the next frame gets that noise plus offset noise (`apply_noise`, shared with the
sampler); the network output F is regressed onto the EDM target (x0 - c_skip * x_noisy) / c_out over the
real (unpadded) steps. The prediction, quantised as the sampler quantises it, then replaces that frame, so
later steps are conditioned on the model's own outputs (the reference's autoregressive rollout). With
`noise_previous_obs` (CS:GO) the conditioning frames get their own noise level sigma_cond.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine.families.diamond.denoiser import Denoiser, apply_noise, quantize
from engine.train.rng import BatchRandom


@dataclass(frozen=True)
class SigmaDistribution:
    """Log-normal training noise levels (config/trainer.yaml `denoiser.sigma_distribution`)."""

    loc: float = -0.4
    scale: float = 1.2
    sigma_min: float = 2e-3
    sigma_max: float = 20.0

    def sample(self, rng: BatchRandom) -> torch.Tensor:
        """(B,) noise levels, one per sample."""
        return (rng.normal(()) * self.scale + self.loc).exp().clip(self.sigma_min, self.sigma_max)


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """F.mse_loss(prediction[mask], target[mask]), and 0 when no sample is real (instead of NaN)."""
    squared = (prediction.float() - target.float()).pow(2).flatten(1).mean(dim=1)
    return (squared * mask).sum() / mask.sum().clamp(min=1)


class DiamondDenoising(nn.Module):
    """Training module: the denoiser plus, frozen, the agent's other networks so that the checkpoint is a
    complete `Agent.state_dict()` (`denoiser.`, `rew_end_model.`, `actor_critic.`).

    batch: `obs` (B, T, 3, H, W) in [-1, 1], `act` (B, T) (index or multi-hot rows), `mask_padding` (B, T).
    """

    def __init__(self, denoiser: Denoiser, sigmas: SigmaDistribution, frozen: dict[str, nn.Module]) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.sigmas = sigmas
        for name, module in frozen.items():
            self.add_module(name, module.requires_grad_(False))

    def forward(self, batch: dict[str, torch.Tensor], rng: BatchRandom) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        denoiser = self.denoiser
        cfg = denoiser.cfg
        n = cfg.inner_model.num_steps_conditioning
        all_obs = batch["obs"].clone()
        b, t, c, h, w = all_obs.shape
        steps = t - n
        loss = all_obs.new_zeros(())
        for i in range(steps):
            prev_obs = all_obs[:, i:n + i].reshape(b, n * c, h, w)
            prev_act = batch["act"][:, i:n + i]
            next_obs = all_obs[:, n + i]
            sigma_cond = None
            if cfg.noise_previous_obs:
                sigma_cond = self.sigmas.sample(rng)
                prev_obs = apply_noise(prev_obs, sigma_cond, cfg.sigma_offset_noise, rng)
            sigma = self.sigmas.sample(rng)
            noisy = apply_noise(next_obs, sigma, cfg.sigma_offset_noise, rng)
            cs = denoiser.compute_conditioners(sigma, sigma_cond)
            output = denoiser.model_output(noisy, cs, prev_obs, prev_act, sigma_cond)
            target = (next_obs - cs.c_skip * noisy) / cs.c_out
            loss = loss + masked_mse(output, target, batch["mask_padding"][:, n + i])
            with torch.no_grad():
                all_obs[:, n + i] = quantize((cs.c_skip * noisy + cs.c_out * output).float())
        return loss / steps, {}
