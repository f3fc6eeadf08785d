"""Spatio-temporal transformer blocks of WorldMAR (`world_mar/modules/attention.py::STBlock`).

Pre-norm blocks: spatial attention over the tokens of one frame (axial "pixel" RoPE), an MLP,
temporal attention over the frames at one token position (1-D RoPE on the frame-axis index), an
MLP. Attention takes boolean masks built from per-token validity (True = may attend); a query that
may attend to nothing outputs zero, as PyTorch >= 2.5 SDPA does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import torch
import torch.nn.functional as F
from torch import nn

from engine.core.noise import NoiseSource
from engine.families.oasis.dit import AxialAttention as OasisAxialAttention
from engine.families.oasis.rotary import RotaryFrequencies

RotationTable = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class AxisMask:
    """Attention mask of one axis: `valid` (N, S) per token, `mask` (N, 1, S, S) = outer AND of it."""

    valid: torch.Tensor
    mask: torch.Tensor

    @classmethod
    def from_valid(cls, valid: torch.Tensor) -> AxisMask:
        return cls(valid, valid[:, None, :, None] & valid[:, None, None, :])


@dataclass(frozen=True)
class AttentionDropout:
    """Dropout on attention weights with probability `p`. With `noise`, the keep decisions come from
    its standard-normal draws (kept where the draw exceeds the p-quantile), so they can be injected;
    without, SDPA draws them from the global generator."""

    p: float
    noise: NoiseSource | None = None


class AxialAttention(OasisAxialAttention):
    """Multi-head self-attention over sequences (N, S, D) with masks and attention dropout; the q/k/v
    projection (no bias) and its rotation are Oasis's, the layout the checkpoints have."""

    def forward(self, x: torch.Tensor, rope: RotationTable, mask: AxisMask,
                dropout: AttentionDropout | None) -> torch.Tensor:
        """x (N, S, D); rope cos/sin broadcast against (N, S, 2, heads, head_dim)."""
        n, s, d = x.shape
        q, k, v = (z.transpose(1, 2) for z in self.project(x, rope))
        if dropout is not None and dropout.noise is not None:
            out = dropout_attention(q, k, v, mask.mask, dropout.p, dropout.noise)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.mask,
                                                 dropout_p=0.0 if dropout is None else dropout.p)
        out = out.transpose(1, 2).reshape(n, s, d)
        return self.to_out(torch.where(mask.valid[..., None], out, 0.0))


def dropout_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, p: float,
                      noise: NoiseSource) -> torch.Tensor:
    """SDPA with dropout on the attention weights, the keep decisions drawn from `noise`."""
    scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1).nan_to_num(0.0)
    keep = noise.draw(tuple(weights.shape), weights.device) > NormalDist().inv_cdf(p)
    return (weights * keep / (1.0 - p)).to(v.dtype) @ v


class Mlp(nn.Module):
    """timm `Mlp` layout (fc1, tanh-GELU, dropout, fc2, dropout)."""

    def __init__(self, dim: int, hidden: int, drop: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x), approximate="tanh"))))


@dataclass(frozen=True)
class BlockInputs:
    """What every block of a stack shares: RoPE tables and masks of both axes, attention dropout."""

    spatial_rope: RotationTable
    temporal_rope: RotationTable
    spatial_mask: AxisMask
    temporal_mask: AxisMask
    dropout: AttentionDropout | None


class STBlock(nn.Module):
    def __init__(self, dim: int, heads: int, spatial_rope: RotaryFrequencies,
                 temporal_rope: RotaryFrequencies, proj_drop: float, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.s_norm1 = nn.LayerNorm(dim)
        self.spatial_attn = AxialAttention(dim, heads, spatial_rope)
        self.s_norm2 = nn.LayerNorm(dim)
        self.s_mlp = Mlp(dim, hidden, proj_drop)
        self.t_norm1 = nn.LayerNorm(dim)
        self.temporal_attn = AxialAttention(dim, heads, temporal_rope)
        self.t_norm2 = nn.LayerNorm(dim)
        self.t_mlp = Mlp(dim, hidden, proj_drop)

    def forward(self, x: torch.Tensor, inputs: BlockInputs) -> torch.Tensor:
        """x (B, T, L, D): L tokens per frame, row-major over the grid including the buffer row."""
        b, t, length, d = x.shape
        spatial = self.spatial_attn(self.s_norm1(x).reshape(b * t, length, d), inputs.spatial_rope,
                                    inputs.spatial_mask, inputs.dropout)
        x = x + spatial.view(b, t, length, d)
        x = x + self.s_mlp(self.s_norm2(x))
        seqs = self.t_norm1(x).transpose(1, 2).reshape(b * length, t, d)
        temporal = self.temporal_attn(seqs, inputs.temporal_rope, inputs.temporal_mask, inputs.dropout)
        x = x + temporal.view(b, length, t, d).transpose(1, 2)
        return x + self.t_mlp(self.t_norm2(x))
