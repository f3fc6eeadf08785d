"""DIAMOND's U-Net and its inner model (eloialonso/diamond `models/blocks.py`, `inner_model.py`).

One set of blocks serves the Atari denoiser (main branch), the CS:GO next-frame denoiser and the CS:GO
upsampler (csgo branch), and the encoder of the Atari reward/end model. Module names equal the official
state dicts, so checkpoints load without renaming.

The inner model is conditioned on a vector built from the noise level (random Fourier features whose
frequencies are a checkpoint buffer), on the CS:GO branch also the noise level of the conditioning frames,
and on the actions: Atari takes action indices (B, T), CS:GO takes multi-hot vectors (B, T, A).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.core.module import Placed

GROUP_SIZE = 32
HEAD_DIM = 8
GN_EPS = 1e-5


def num_groups(channels: int) -> int:
    return max(1, channels // GROUP_SIZE)


class PrefixLoadable:
    """Strict loading from a flat `name -> tensor` mapping whose keys carry a prefix (`denoiser.`, ...)."""

    def load_from(self, state: Mapping[str, torch.Tensor], prefix: str = "") -> None:
        """Load the keys under `prefix`; missing, unexpected or wrong-shaped keys raise CheckpointError."""
        from engine.checkpoints.loading import load_into

        load_into(self, state, prefix or None)


class FourierFeatures(nn.Module):
    """cat(cos, sin) of 2*pi*c*W; W is a persistent buffer drawn once at training time."""

    def __init__(self, cond_channels: int) -> None:
        super().__init__()
        if cond_channels % 2:
            raise ValueError(f"cond_channels must be even, got {cond_channels}")
        self.register_buffer("weight", torch.randn(1, cond_channels // 2))

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        f = (2 * math.pi * c.unsqueeze(1)) @ self.weight
        return torch.cat([f.cos(), f.sin()], dim=-1)


class GroupNorm(nn.Module):
    """Affine group norm with the official key layout (`<name>.norm.weight`)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(num_groups(channels), channels, eps=GN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class AdaGroupNorm(nn.Module):
    """Group norm without affine, then a scale and shift predicted from the conditioning vector."""

    def __init__(self, channels: int, cond_channels: int) -> None:
        super().__init__()
        self.groups = num_groups(channels)
        self.linear = nn.Linear(cond_channels, 2 * channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = F.group_norm(x, self.groups, eps=GN_EPS)
        scale, shift = self.linear(cond)[:, :, None, None].chunk(2, dim=1)
        return x * (1 + scale) + shift


class SelfAttention2d(nn.Module):
    """Multi-head self-attention over pixels; the residual adds to the normalised input, as the reference does."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.heads = max(1, channels // HEAD_DIM)
        self.norm = GroupNorm(channels)
        self.qkv_proj = nn.Conv2d(channels, 3 * channels, 1)
        self.out_proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        x = self.norm(x)
        qkv = self.qkv_proj(x).view(n, 3 * self.heads, c // self.heads, h * w).transpose(2, 3)
        q, k, v = qkv.chunk(3, dim=1)
        y = F.scaled_dot_product_attention(q, k, v)
        return x + self.out_proj(y.transpose(2, 3).reshape(n, c, h, w))


class ResBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, cond_channels: int, attn: bool) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        self.norm1 = AdaGroupNorm(in_channels, cond_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = AdaGroupNorm(out_channels, cond_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.attn = SelfAttention2d(out_channels) if attn else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        r = self.proj(x)
        x = self.conv1(F.silu(self.norm1(x, cond)))
        x = self.conv2(F.silu(self.norm2(x, cond)))
        return self.attn(x + r)


class ResBlocks(nn.Module):
    """A chain of ResBlocks; with `to_cat`, block k first concatenates `to_cat[k]` along channels."""

    def __init__(self, in_channels: Sequence[int], out_channels: Sequence[int], cond_channels: int,
                 attn: bool) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(
            ResBlock(i, o, cond_channels, attn) for i, o in zip(in_channels, out_channels, strict=True))

    def forward(self, x: torch.Tensor, cond: torch.Tensor,
                to_cat: Sequence[torch.Tensor] | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        outputs = []
        for k, block in enumerate(self.resblocks):
            if to_cat is not None:
                x = torch.cat((x, to_cat[k]), dim=1)
            x = block(x, cond)
            outputs.append(x)
        return x, outputs


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """Levels i = 0..L-1 with channels[i] and depths[i] ResBlocks; inputs are zero-padded to multiples of 2^(L-1)."""

    def __init__(self, cond_channels: int, depths: Sequence[int], channels: Sequence[int],
                 attn_depths: Sequence[int]) -> None:
        super().__init__()
        if not len(depths) == len(channels) == len(attn_depths):
            raise ValueError("depths, channels and attn_depths must have the same length")
        self.levels = len(channels)
        previous = [channels[0], *channels[:-1]]
        self.d_blocks = nn.ModuleList()
        self.u_blocks = nn.ModuleList()
        for n, c, c_prev, attn in zip(depths, channels, previous, attn_depths, strict=True):
            self.d_blocks.append(ResBlocks([c_prev] + [c] * (n - 1), [c] * n, cond_channels, bool(attn)))
            self.u_blocks.insert(0, ResBlocks([2 * c] * n + [c + c_prev], [c] * n + [c_prev], cond_channels,
                                              bool(attn)))
        self.mid_blocks = ResBlocks([channels[-1]] * 2, [channels[-1]] * 2, cond_channels, True)
        self.downsamples = nn.ModuleList([nn.Identity(), *(Downsample(c) for c in channels[:-1])])
        self.upsamples = nn.ModuleList([nn.Identity(), *(Upsample(c) for c in reversed(channels[:-1]))])

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        multiple = 2 ** (self.levels - 1)
        x = F.pad(x, (0, -w % multiple, 0, -h % multiple))
        skips = []
        for block, down in zip(self.d_blocks, self.downsamples, strict=True):
            x_down = down(x)
            x, outputs = block(x_down, cond)
            skips.append((x_down, *outputs))
        x, _ = self.mid_blocks(x, cond)
        for block, up, skip in zip(self.u_blocks, self.upsamples, reversed(skips), strict=True):
            x, _ = block(up(x), cond, skip[::-1])
        return x[..., :h, :w]


@dataclass(frozen=True)
class InnerModelConfig:
    """Sizes of the inner model. `noise_cond` (the csgo branch) adds the embedding of the conditioning frames'
    noise level; `is_upsampler` drops the action embedding and adds the upsampled low-res frame to the input."""

    img_channels: int
    num_steps_conditioning: int
    cond_channels: int
    depths: tuple[int, ...]
    channels: tuple[int, ...]
    attn_depths: tuple[int, ...]
    num_actions: int | None = None
    is_upsampler: bool = False
    noise_cond: bool = False

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InnerModelConfig:
        """From an official config mapping; a csgo-branch mapping is recognised by its `is_upsampler` entry."""
        known = {f.name for f in fields(cls)}
        args = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known}
        args.setdefault("noise_cond", "is_upsampler" in d)
        return cls(**args)


class InnerModel(Placed, nn.Module, PrefixLoadable):
    """F(noisy * c_in, c_noise, [c_noise_cond,] obs / sigma_data, act): the network the EDM wrapper preconditions."""

    def __init__(self, cfg: InnerModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        t, cc = cfg.num_steps_conditioning, cfg.cond_channels
        self.noise_emb = FourierFeatures(cc)
        self.noise_cond_emb = FourierFeatures(cc) if cfg.noise_cond else None
        if cfg.is_upsampler:
            self.act_emb = None
        else:
            if cfg.num_actions is None or cc % t:
                raise ValueError(f"the action embedding needs num_actions and cond_channels ({cc}) divisible by T ({t})")
            self.act_emb = nn.Sequential(nn.Embedding(cfg.num_actions, cc // t), nn.Flatten())
        self.cond_proj = nn.Sequential(nn.Linear(cc, cc), nn.SiLU(), nn.Linear(cc, cc))
        in_frames = t + 1 + (1 if cfg.is_upsampler else 0)
        self.conv_in = nn.Conv2d(in_frames * cfg.img_channels, cfg.channels[0], 3, padding=1)
        self.unet = UNet(cc, cfg.depths, cfg.channels, cfg.attn_depths)
        self.norm_out = GroupNorm(cfg.channels[0])
        self.conv_out = nn.Conv2d(cfg.channels[0], cfg.img_channels, 3, padding=1)

    def embed_actions(self, act: torch.Tensor) -> torch.Tensor:
        """(B, T) indices or (B, T, A) multi-hot 0/1 vectors -> (B, cond_channels), time-major."""
        if self.act_emb is None:
            raise ValueError("this inner model has no action embedding (upsampler)")
        if act.ndim == 3:
            return (act.to(self.act_emb[0].weight.dtype) @ self.act_emb[0].weight).flatten(1)
        return self.act_emb(act)

    def condition(self, c_noise: torch.Tensor, c_noise_cond: torch.Tensor | None,
                  act: torch.Tensor | None) -> torch.Tensor:
        """The vector fed to every AdaGroupNorm."""
        emb = self.noise_emb(c_noise)
        if self.noise_cond_emb is not None:
            if c_noise_cond is None:
                c_noise_cond = torch.zeros_like(c_noise)
            emb = emb + self.noise_cond_emb(c_noise_cond)
        elif c_noise_cond is not None:
            raise ValueError("this inner model is not conditioned on the noise level of its conditioning frames")
        if self.act_emb is not None:
            if act is None:
                raise ValueError("this inner model needs actions")
            emb = emb + self.embed_actions(act)
        return self.cond_proj(emb)

    def forward(self, noisy_next_obs: torch.Tensor, c_noise: torch.Tensor, c_noise_cond: torch.Tensor | None,
                obs: torch.Tensor, act: torch.Tensor | None) -> torch.Tensor:
        cond = self.condition(c_noise, c_noise_cond, act)
        x = self.conv_in(torch.cat((obs, noisy_next_obs), dim=1))
        x = self.unet(x, cond)
        return self.conv_out(F.silu(self.norm_out(x)))
