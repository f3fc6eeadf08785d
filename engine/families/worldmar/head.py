"""The per-token diffusion head of WorldMAR (`world_mar/models/diffloss.py`, from MAR by Li et al. 2024):
an MLP of adaLN residual blocks that predicts noise and a learned-variance value for one token,
conditioned on the transformer's output at that token. Keys follow `diffloss.net.*` of the checkpoint.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.families.oasis.dit import NoiseLevelEmbed, modulate
from engine.families.worldmar.diffusion import GaussianDiffusion


class ResBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.in_ln = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.adaLN_modulation(y).chunk(3, dim=-1)
        return x + gate * self.mlp(modulate(self.in_ln(x), shift, scale))


class FinalLayer(nn.Module):
    def __init__(self, width: int, out_channels: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(y).chunk(2, dim=-1)
        return self.linear(modulate(F.layer_norm(x, x.shape[-1:], eps=1e-6), shift, scale))


class DiffusionMLP(nn.Module):
    """`SimpleMLPAdaLN`: x (N, C) noisy token, t (N,) integer timestep, c (N, Dz) condition -> (N, 2C):
    predicted noise, then the variance interpolation value in [-1, 1]."""

    def __init__(self, in_channels: int, width: int, z_channels: int, depth: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.time_embed = NoiseLevelEmbed(width)
        self.cond_embed = nn.Linear(z_channels, width)
        self.input_proj = nn.Linear(in_channels, width)
        self.res_blocks = nn.ModuleList(ResBlock(width) for _ in range(depth))
        self.final_layer = FinalLayer(width, 2 * in_channels)

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        x = self.input_proj(x)
        y = self.time_embed(t) + self.cond_embed(c)
        for block in self.res_blocks:
            x = block(x, y)
        return self.final_layer(x, y)


class DiffLoss(nn.Module):
    """Holds the head network (`net`) and its two diffusion processes: the full 1000-step one used by
    the training loss and the respaced one (`num_sampling_steps`) used for sampling."""

    def __init__(self, target_channels: int, z_channels: int, width: int, depth: int,
                 num_sampling_steps: str | int) -> None:
        super().__init__()
        self.in_channels = target_channels
        self.net = DiffusionMLP(target_channels, width, z_channels, depth)
        self.train_diffusion = GaussianDiffusion.respaced("")
        self.gen_diffusion = GaussianDiffusion.respaced(num_sampling_steps)
