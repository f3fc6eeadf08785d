"""The Doom world model: an EDM denoiser (Karras et al. 2022, as DIAMOND trains and samples it, Alonso et al.
2024) over 64x80 frames, conditioned on the last frames, their actions and frames recalled by pose.

F(noisy next frame, noise level, context frames, actions, memory frames, their relative poses):

- pixels in, pixels out, with a 2x2 space-to-depth at the input and depth-to-space at the output, so the
  U-Net (DIAMOND's blocks, `engine.families.diamond.unet`) runs at 32x40: 4x fewer positions per layer than
  DIAMOND at the same frame size, which is what lets a CPU train it and play it at 20+ ticks/s;
- context frames, memory frames and the noisy frame are stacked as channels; memory slots that hold nothing
  are zeros, and the model is told so by the pose embedding's `valid` feature;
- the conditioning vector (every AdaGroupNorm's) sums the noise-level embedding, the noise level of the
  context frames (noised in training so that the model stays on track on its own outputs), a linear
  embedding of the context actions and an MLP of the memory frames' poses relative to the frame being made
  (`memory_pose_features`: right, up, forward offsets in its camera frame, sin/cos of the yaw difference);
- EDM preconditioning with DIAMOND's offset noise, output clamped and quantised to the 256 uint8 levels;
- with `depth_width` > 0, a depth network of that width (`depth.DepthNet`) beside the denoiser: the session
  stops the dream's pose at the walls it predicts and, with `reproject_memory`, reprojects each recalled frame
  to the new pose by its predicted depth (`reproject`) before the model sees it, in play as in training;
- with `blend_width` > 0 too, a blend network of that width (`blend.MemoryBlend`) after the sampler: per pixel,
  how much of the dream comes from the model's frame and how much from each reprojected recalled frame.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.core.module import Placed
from engine.errors import ConfigError
from engine.families.diamond.denoiser import Conditioners, quantize
from engine.families.diamond.unet import FourierFeatures, GroupNorm, UNet
from engine.families.doom.blend import MemoryBlend
from engine.families.doom.depth import DepthNet

POSE_FEATURES = 6  # right, up, forward (/ pose_scale), sin and cos of the yaw difference, valid
SPACE_TO_DEPTH = 2


@dataclass(frozen=True)
class DoomModelConfig:
    frame_size: tuple[int, int] = (64, 80)
    context: int = 4
    memory: int = 2
    action_dim: int = 7
    cond_channels: int = 256
    channels: tuple[int, ...] = (64, 96, 128)
    depths: tuple[int, ...] = (2, 2, 2)
    attn_depths: tuple[int, ...] = (0, 0, 1)
    sigma_data: float = 0.5
    sigma_offset_noise: float = 0.3
    pose_scale: float = 256.0  # map units per unit of the relative-pose features
    depth_width: int = 0  # channels of the depth network (0: none)
    reproject_memory: bool = False  # recalled frames reach the model redrawn from its pose by their depth
    blend_width: int = 0  # channels of the blend network (0: none; needs reproject_memory)
    blend_newest: bool = False  # the blend also mixes in the newest frame redrawn from the new pose (`blend`)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "networks.world_model") -> DoomModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown key {unknown[0]} (expected one of {', '.join(sorted(known))})")
        values = {k: tuple(v) if isinstance(v, list | tuple) else v for k, v in data.items()}
        cfg = cls(**values)
        height, width = cfg.frame_size
        multiple = SPACE_TO_DEPTH * 2 ** (len(cfg.channels) - 1)
        if height % multiple or width % multiple:
            raise ConfigError(f"{source}: frame_size {height}x{width} must be a multiple of {multiple}")
        if cfg.context < 1 or cfg.memory < 0 or cfg.action_dim < 1 or cfg.depth_width < 0 or cfg.blend_width < 0:
            raise ConfigError(f"{source}: needs context >= 1, memory >= 0, action_dim >= 1, depth_width >= 0 and "
                              "blend_width >= 0")
        if cfg.depth_width % 8:
            raise ConfigError(f"{source}: depth_width must be a multiple of 8 (its group norms), got {cfg.depth_width}")
        if cfg.reproject_memory and not cfg.depth_width:
            raise ConfigError(f"{source}: reproject_memory needs a depth network (depth_width > 0)")
        if cfg.blend_width and not (cfg.reproject_memory and cfg.memory):
            raise ConfigError(f"{source}: blend_width needs memory frames redrawn by depth (memory > 0, "
                              "reproject_memory: true)")
        if cfg.blend_newest and not cfg.blend_width:
            raise ConfigError(f"{source}: blend_newest needs a blend network (blend_width > 0)")
        return cfg


class DoomWorldModel(Placed, nn.Module):
    """See the module docstring; `denoise` is the sampler's call."""

    def __init__(self, frame_size: Sequence[int] = (64, 80), context: int = 4, memory: int = 2, action_dim: int = 7,
                 cond_channels: int = 256, channels: Sequence[int] = (64, 96, 128), depths: Sequence[int] = (2, 2, 2),
                 attn_depths: Sequence[int] = (0, 0, 1), sigma_data: float = 0.5, sigma_offset_noise: float = 0.3,
                 pose_scale: float = 256.0, depth_width: int = 0, reproject_memory: bool = False,
                 blend_width: int = 0, blend_newest: bool = False) -> None:
        super().__init__()
        self.cfg = cfg = DoomModelConfig.from_mapping({
            "frame_size": frame_size, "context": context, "memory": memory, "action_dim": action_dim,
            "cond_channels": cond_channels, "channels": channels, "depths": depths, "attn_depths": attn_depths,
            "sigma_data": sigma_data, "sigma_offset_noise": sigma_offset_noise, "pose_scale": pose_scale,
            "depth_width": depth_width, "reproject_memory": reproject_memory, "blend_width": blend_width,
            "blend_newest": blend_newest})
        cc = cfg.cond_channels
        self.noise_emb = FourierFeatures(cc)
        self.noise_cond_emb = FourierFeatures(cc)
        self.act_emb = nn.Linear(cfg.context * cfg.action_dim, cc)
        self.memory_emb = nn.Sequential(nn.Linear(max(cfg.memory, 1) * POSE_FEATURES, cc), nn.SiLU(), nn.Linear(cc, cc))
        self.cond_proj = nn.Sequential(nn.Linear(cc, cc), nn.SiLU(), nn.Linear(cc, cc))
        in_channels = 3 * (cfg.context + cfg.memory + 1) * SPACE_TO_DEPTH**2
        self.conv_in = nn.Conv2d(in_channels, cfg.channels[0], 3, padding=1)
        self.unet = UNet(cc, cfg.depths, cfg.channels, cfg.attn_depths)
        self.norm_out = GroupNorm(cfg.channels[0])
        self.conv_out = nn.Conv2d(cfg.channels[0], 3 * SPACE_TO_DEPTH**2, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        self.depth_net = DepthNet(cfg.depth_width) if cfg.depth_width else None
        sources = cfg.memory + int(cfg.blend_newest)  # the newest frame's view is the last slot
        self.blend_net = MemoryBlend(sources, cfg.blend_width, POSE_FEATURES) if cfg.blend_width else None

    def config_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.cfg).items()}

    def conditioners(self, sigma: torch.Tensor, sigma_cond: torch.Tensor) -> Conditioners:
        """EDM's c_in, c_out, c_skip, c_noise with DIAMOND's offset noise; c_noise_cond of the context's noise."""
        sigma_data, offset = self.cfg.sigma_data, self.cfg.sigma_offset_noise
        sigma = (sigma**2 + offset**2).sqrt()
        c_in = 1 / (sigma**2 + sigma_data**2).sqrt()
        c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
        c_out = sigma * c_skip.sqrt()
        return Conditioners(*(c.view(-1, 1, 1, 1) for c in (c_in, c_out, c_skip)), (sigma.log() / 4).view(-1),
                            (sigma_cond.clamp(min=1e-3).log() / 4).view(-1))

    def condition(self, cs: Conditioners, actions: torch.Tensor, memory_pose: torch.Tensor) -> torch.Tensor:
        """The vector fed to every AdaGroupNorm; actions (B, context, A), memory_pose (B, memory, 6)."""
        emb = self.noise_emb(cs.c_noise) + self.noise_cond_emb(cs.c_noise_cond)
        emb = emb + self.act_emb(actions.flatten(1).to(emb.dtype))
        if self.cfg.memory:
            emb = emb + self.memory_emb(memory_pose.flatten(1).to(emb.dtype))
        return self.cond_proj(emb)

    def model_output(self, noisy: torch.Tensor, cs: Conditioners, context: torch.Tensor, memory: torch.Tensor,
                     actions: torch.Tensor, memory_pose: torch.Tensor) -> torch.Tensor:
        """The raw network output F; frames (B, 3k, H, W) in [-1, 1] (context oldest first, memory by slot)."""
        cond = self.condition(cs, actions, memory_pose)
        sigma_data = self.cfg.sigma_data
        x = torch.cat([context / sigma_data, memory / sigma_data, noisy * cs.c_in], dim=1)
        x = self.conv_in(F.pixel_unshuffle(x, SPACE_TO_DEPTH))
        x = self.conv_out(F.silu(self.norm_out(self.unet(x, cond))))
        return F.pixel_shuffle(x, SPACE_TO_DEPTH)

    def denoise_unquantized(self, noisy: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor,
                            memory: torch.Tensor, actions: torch.Tensor, memory_pose: torch.Tensor,
                            sigma_cond: torch.Tensor) -> torch.Tensor:
        cs = self.conditioners(sigma, sigma_cond)
        return cs.c_skip * noisy + cs.c_out * self.model_output(noisy, cs, context, memory, actions, memory_pose)

    @torch.no_grad()
    def denoise(self, noisy: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor, memory: torch.Tensor,
                actions: torch.Tensor, memory_pose: torch.Tensor, sigma_cond: torch.Tensor) -> torch.Tensor:
        """The denoised frame, clamped and quantised as a uint8 frame shows it."""
        return quantize(self.denoise_unquantized(noisy, sigma, context, memory, actions, memory_pose, sigma_cond))


def memory_pose_features(target: torch.Tensor, memory: torch.Tensor, valid: torch.Tensor,
                         pose_scale: float) -> torch.Tensor:
    """(..., M, 6) features of memory poses (..., M, 5) relative to target poses (..., 5): the offset in the
    target's camera frame (right, up, forward; the view direction is (sin yaw, cos yaw) in the x-z plane) over
    `pose_scale`, sin and cos of the yaw difference, and `valid` (..., M); invalid slots are all zeros."""
    yaw = torch.deg2rad(target[..., 4]).unsqueeze(-1)
    dx = memory[..., 0] - target[..., None, 0]
    dy = memory[..., 1] - target[..., None, 1]
    dz = memory[..., 2] - target[..., None, 2]
    forward = dx * torch.sin(yaw) + dz * torch.cos(yaw)
    right = dx * torch.cos(yaw) - dz * torch.sin(yaw)
    dyaw = torch.deg2rad(memory[..., 4]) - yaw
    features = torch.stack([right / pose_scale, dy / pose_scale, forward / pose_scale, torch.sin(dyaw),
                            torch.cos(dyaw), torch.ones_like(dyaw)], dim=-1)
    return features * valid.unsqueeze(-1).to(features.dtype)


def action_window(actions: torch.Tensor, first: int, count: int) -> torch.Tensor:
    """(count, A) float actions of rows first .. first+count-1 of `actions` (T, A), zeros before row 0: the actions
    that led into a run of frames, the first frame of an episode led into by the zero action."""
    rows = torch.arange(first, first + count, device=actions.device)
    return (actions[rows.clamp(min=0)] * (rows >= 0)[:, None]).float()


def initial_sigma_cond(batch: int, value: float, device: torch.device) -> torch.Tensor:
    """The context frames' noise level at sampling (a small constant, as DIAMOND's csgo `s_cond`)."""
    return torch.full((batch,), max(value, 1e-3), device=device)

