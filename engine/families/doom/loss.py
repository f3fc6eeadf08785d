"""The Doom world model's loss: DIAMOND's EDM denoising loss (eloialonso/diamond `Denoiser.forward`; Karras et
al. 2022) on one next frame, with the context frames noised as DIAMOND's CS:GO branch does
(`noise_previous_obs`), so that in play, where the context is the model's own output, it stays on track.

sigma ~ exp(N(loc, scale^2)) clipped to [sigma_min, sigma_max] for the frame being denoised; the context gets a
noise level of its own from the same distribution, shifted down by `context.shift` (log-space) and zero for a
`context.clean` fraction of the samples. A `context.heavy` fraction gets a context noised beyond recognition
(sigma uniform in `heavy_sigma`): then the recalled memory frames are what shows the place, which teaches the
model to use them (in one-step training a clean context alone shows almost everything). The regression target is
EDM's (x0 - c_skip * x_noisy) / c_out. A world model with a depth network adds its loss (`depth.depth_loss` on
the clean target frame and its recorded depth), weighted by `depth_weight`; one with a blend network adds
`blend.blend_loss`, weighted by `blend_weight`, on the frame the play sampler (`play_sampler`, the world's
`sampler:` section) makes from the item's clean context and noise of the batch's draws, without gradient. A part
whose weight is 0 gets no gradient and stays as it was: `denoising_weight` 0 trains the depth or blend network
alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from torch import nn

from engine.errors import ConfigError
from engine.eval.metrics import psnr_db
from engine.families.diamond.denoiser import apply_noise
from engine.families.diamond.loss import SigmaDistribution
from engine.families.doom.blend import blend_loss
from engine.families.doom.depth import depth_loss
from engine.families.doom.network import DoomWorldModel
from engine.families.doom.world import DoomSampler, NewestView, newest_view
from engine.train.rng import BatchRandom


@dataclass(frozen=True)
class ContextNoise:
    """How noisy the context frames are in training (see the module docstring)."""

    clean: float = 0.3
    shift: float = -2.5
    sigma_max: float = 1.0
    heavy: float = 0.15
    heavy_sigma: tuple[float, float] = (0.5, 2.0)


class DoomDenoising(nn.Module):
    """Training module; batch: `context` (B, 3n, H, W), `memory` (B, 3m, H, W), `memory_pose` (B, m, 6),
    `actions` (B, n, A), `target` (B, 3, H, W), frames in [-1, 1]; `target_depth` (B, H, W) with a depth net,
    `memory_drawn` (B, m, H, W) with a blend net."""

    def __init__(self, world_model: DoomWorldModel, sigmas: SigmaDistribution, context: ContextNoise,
                 denoising_weight: float = 1.0, depth_weight: float = 1.0, blend_weight: float = 0.0,
                 play_sampler: DictConfig | None = None) -> None:
        super().__init__()
        self.train_depth = world_model.depth_net is not None and depth_weight > 0
        self.train_blend = world_model.blend_net is not None and blend_weight > 0
        if denoising_weight <= 0 and not (self.train_depth or self.train_blend):
            raise ConfigError("loss: with denoising_weight 0 only a depth network (depth_width > 0, depth_weight "
                              "> 0) or a blend network (blend_width > 0, blend_weight > 0) is left to train")
        if self.train_blend and play_sampler is None:
            raise ConfigError("loss: blend_weight > 0 needs the play sampler's settings (the world's sampler:)")
        self.world_model = world_model
        self.sigmas, self.context_noise, self.play_sampler = sigmas, context, play_sampler
        self.denoising_weight, self.depth_weight = float(denoising_weight), float(depth_weight)
        self.blend_weight = float(blend_weight)

    def forward(self, batch: dict[str, torch.Tensor], rng: BatchRandom) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model = self.world_model
        loss, metrics = torch.zeros((), device=batch["target"].device), {}
        if self.denoising_weight > 0:  # else the denoiser gets no gradient, and AdamW leaves it as it is
            denoising, metrics["denoised_psnr"] = self.denoising(batch, rng)
            loss = loss + self.denoising_weight * denoising
        if self.train_depth:
            depth, metrics["depth_relative_error"] = depth_loss(model.depth_net, batch["target"], batch["target_depth"])
            loss = loss + self.depth_weight * depth
        if self.train_blend:
            blend, metrics["blended_psnr"], metrics["sampled_psnr"] = self.blending(batch, rng)
            loss = loss + self.blend_weight * blend
        return loss, metrics

    def denoising(self, batch: dict[str, torch.Tensor], rng: BatchRandom) -> tuple[torch.Tensor, torch.Tensor]:
        """(EDM loss, mean PSNR of the denoised frames)."""
        model, noise = self.world_model, self.context_noise
        target = batch["target"]
        sigma = self.sigmas.sample(rng)
        log_cond = rng.normal(()) * self.sigmas.scale + self.sigmas.loc + noise.shift
        kind = rng.uniform(())
        low, high = noise.heavy_sigma
        sigma_cond = torch.where(kind < noise.clean, torch.full_like(log_cond, 1e-3),
                                 log_cond.exp().clamp(1e-3, noise.sigma_max))
        sigma_cond = torch.where(kind > 1 - noise.heavy, low + (high - low) * rng.uniform(()), sigma_cond)
        context = batch["context"] + rng.normal(tuple(batch["context"].shape[1:])) * sigma_cond.view(-1, 1, 1, 1)
        noisy = apply_noise(target, sigma, model.cfg.sigma_offset_noise, rng)
        cs = model.conditioners(sigma, sigma_cond)
        output = model.model_output(noisy, cs, context, batch["memory"], batch["actions"], batch["memory_pose"])
        regression = (target - cs.c_skip * noisy) / cs.c_out
        loss = (output.float() - regression.float()).pow(2).mean()
        with torch.no_grad():
            denoised = (cs.c_skip * noisy + cs.c_out * output).float().clamp(-1, 1)
            psnr = psnr_db((denoised - target).pow(2).flatten(1).mean(1))
        return loss, psnr.mean()

    def blending(self, batch: dict[str, torch.Tensor], rng: BatchRandom
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(blend loss, mean PSNR of the blended frames, of the sampled frames before the blend).

        Items with a `rollout_context` (`DoomItems(rollout=K)`) first run K ticks of the play sampler, the blend
        included, from it; the frame to blend is then made from the dream's own frames, as in play. Those K ticks
        keep the item's recalled frames as they were drawn for its target frame."""
        model, target, n = self.world_model, batch["target"], self.world_model.cfg.context
        sampler = DoomSampler(model, self.play_sampler, rng)
        memory, poses, drawn = batch["memory"], batch["memory_pose"], batch["memory_drawn"]
        with torch.no_grad():
            context, actions, ticks = batch["context"], batch["actions"], 0
            if "rollout_context" in batch:
                context, ticks = batch["rollout_context"], batch["rollout_actions"].shape[1] - n
                for k in range(ticks):
                    frame = sampler.sample(context, memory, batch["rollout_actions"][:, k:k + n], poses, drawn,
                                           self.newest(batch, context, k))
                    context = torch.cat([context[:, 3:], frame.to(context)], 1)
                actions = batch["rollout_actions"][:, ticks:]
            sampled = sampler.denoise(context, memory, actions, poses)
            sampled_psnr = psnr_db((sampled - target.float()).pow(2).flatten(1).mean(1)).mean()
            newest = self.newest(batch, context, ticks)
        if newest is not None:
            memory, drawn, poses = newest.after(memory, drawn, poses)
        loss, psnr = blend_loss(model.blend_net, sampled, memory, drawn, poses, target)
        return loss, psnr, sampled_psnr

    def newest(self, batch: dict[str, torch.Tensor], context: torch.Tensor, tick: int) -> NewestView | None:
        """With `blend_newest`: the newest frame of `context` redrawn, by its predicted depth as in play, from its
        pose to the pose of the frame that tick `tick` of the item's run makes (`newest_poses`)."""
        model = self.world_model
        if not model.cfg.blend_newest:
            return None
        frames, run = context[:, -3:], batch["newest_poses"]
        depth = model.depth_net.depth(frames.to(model.dtype)).float()
        return newest_view(frames, depth, run[:, tick], run[:, tick + 1], model.cfg.pose_scale)
