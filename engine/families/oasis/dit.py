"""Oasis spatio-temporal DiT (etched-ai/open-oasis `dit.py`, DiT-S/2 for Oasis-500M).

Each block is a spatial sub-block (attention within a frame, 2-D pixel RoPE) followed by a
temporal sub-block (causal attention across frames at one grid position, 1-D RoPE), both
adaLN-zero modulated by the per-frame noise-level + action embedding. Parameter names and
shapes follow `oasis500m.safetensors`.

Besides the reference `forward`, the model can run frames against a temporal key/value cache
(`forward_cached`): since temporal attention is causal and the other operations are per frame,
context frames' keys/values do not depend on later frames, so they are computed once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.core.module import Placed
from engine.families.oasis.rotary import (
    RotaryFrequencies,
    axial_angles,
    language_frequencies,
    pair_angles,
    pixel_frequencies,
    rotation_table,
)
from kernels.rope import rotate_pairs

RotationTable = tuple[torch.Tensor, torch.Tensor]
Chunks = tuple[torch.Tensor, ...]


@dataclass
class Modulations:
    """Every adaLN output for a set of frames: per block (spatial, temporal) chunks and the final layer's.

    Computed once per distinct conditioning, e.g. for all denoising steps of a tick in one batch.
    """

    blocks: list[tuple[Chunks, Chunks]]
    final: Chunks

    def frames(self, index: int) -> Modulations:
        """The modulations of frame `index` along the T axis, as a one-frame Modulations."""
        pick = lambda chunks: tuple(c[:, index : index + 1] for c in chunks)  # noqa: E731
        return Modulations([(pick(s), pick(t)) for s, t in self.blocks], pick(self.final))

NOISE_EMBED_DIM = 256


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


def layer_norm(x: torch.Tensor) -> torch.Tensor:
    """LayerNorm without affine parameters, eps 1e-6 (as in the reference)."""
    return F.layer_norm(x, x.shape[-1:], eps=1e-6)


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_channels: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, H/p, W/p, dim)."""
        return self.proj(frames).permute(0, 2, 3, 1)


class NoiseLevelEmbed(nn.Module):
    """Sinusoidal embedding of the integer noise level ([cos, sin] order) followed by an MLP."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(NOISE_EMBED_DIM, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, levels: torch.Tensor) -> torch.Tensor:
        half = NOISE_EMBED_DIM // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=levels.device) / half)
        args = levels.to(torch.float32)[..., None] * freqs
        features = torch.cat((args.cos(), args.sin()), dim=-1)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class AxialAttention(nn.Module):
    """q/k/v projection (no bias) and output projection shared by the spatial and temporal kinds."""

    def __init__(self, dim: int, heads: int, rotary_emb: RotaryFrequencies) -> None:
        super().__init__()
        self.heads = heads
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        self.rotary_emb = rotary_emb

    def project(self, x: torch.Tensor, rope: RotationTable) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(..., D) -> q, k, v of shape (..., heads, head_dim), q and k rotated together in one pass.

        `rope` broadcasts against (..., 2, heads, head_dim).
        """
        qkv = self.to_qkv(x).unflatten(-1, (3, self.heads, -1))
        qk = rotate_pairs(qkv[..., :2, :, :], rope)
        return qk[..., 0, :, :], qk[..., 1, :, :], qkv[..., 2, :, :]


@dataclass
class TemporalCache:
    """Per-layer temporal keys/values of already-seen frames, preallocated for `capacity` frames.

    keys/values: (depth, B * h * w, heads, capacity, head_dim). Slot `length` is scratch space that
    the denoising steps of the newest frame overwrite; `length` counts the committed context frames.
    """

    keys: torch.Tensor
    values: torch.Tensor
    length: int = 0

    @property
    def capacity(self) -> int:
        return self.keys.shape[3]


class DiTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, spatial_rope: RotaryFrequencies,
                 temporal_rope: RotaryFrequencies) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.s_attn = AxialAttention(dim, heads, spatial_rope)
        self.s_mlp = Mlp(dim, hidden)
        self.s_adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.t_attn = AxialAttention(dim, heads, temporal_rope)
        self.t_mlp = Mlp(dim, hidden)
        self.t_adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def modulations(self, cond: torch.Tensor) -> tuple[Chunks, Chunks]:
        """adaLN (shift, scale, gate) x 2 of the spatial and the temporal sub-block, each (B, T, 1, 1, D)."""
        return tuple(m(cond)[:, :, None, None].chunk(6, dim=-1)
                     for m in (self.s_adaLN_modulation, self.t_adaLN_modulation))

    def spatial(self, x: torch.Tensor, mods: Chunks, rope: RotationTable) -> torch.Tensor:
        """x (B, T, h, w, D), rope: cos/sin (h, w, 1, 1, head_dim)."""
        b, t, h, w, d = x.shape
        q, k, v = self.s_attn.project(modulate(layer_norm(x), mods[0], mods[1]), rope)
        q, k, v = (z.reshape(b * t, h * w, self.s_attn.heads, -1).transpose(1, 2) for z in (q, k, v))
        attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, h, w, d)
        x = x + mods[2] * self.s_attn.to_out(attn)
        return x + mods[5] * self.s_mlp(modulate(layer_norm(x), mods[3], mods[4]))

    def temporal(self, x: torch.Tensor, mods: Chunks, rope: RotationTable,
                 cache: tuple[torch.Tensor, torch.Tensor] | None, start: int,
                 keys_only: bool = False) -> torch.Tensor | None:
        """x (B, T, h, w, D) holds frames at positions start .. start+T-1; rope: cos/sin (T, 1, 1, 1, 1, head_dim).

        With a cache, these frames' keys/values are written at slots start .. start+T-1 and the
        queries attend causally over slots 0 .. start+T-1. `keys_only` stops after writing them.
        """
        b, t, h, w, d = x.shape
        q, k, v = self.t_attn.project(modulate(layer_norm(x), mods[0], mods[1]), rope)
        q, k, v = (z.permute(0, 2, 3, 4, 1, 5).reshape(b * h * w, self.t_attn.heads, t, -1) for z in (q, k, v))
        if cache is None:
            attn = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            cache_k, cache_v = cache
            cache_k[:, :, start:start + t] = k
            cache_v[:, :, start:start + t] = v
            if keys_only:
                return None
            k, v = cache_k[:, :, : start + t], cache_v[:, :, : start + t]
            attn = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(t, start, q.device))
        attn = attn.reshape(b, h, w, self.t_attn.heads, t, -1).permute(0, 4, 1, 2, 3, 5).reshape(b, t, h, w, d)
        x = x + mods[2] * self.t_attn.to_out(attn)
        return x + mods[5] * self.t_mlp(modulate(layer_norm(x), mods[3], mods[4]))


def causal_mask(queries: int, offset: int, device: torch.device) -> torch.Tensor | None:
    """Boolean mask letting query i (at position offset + i) see keys 0 .. offset + i; None when all may."""
    if queries == 1:
        return None
    keys = torch.arange(offset + queries, device=device)
    return keys[None, :] <= (offset + torch.arange(queries, device=device))[:, None]


class FinalLayer(nn.Module):
    def __init__(self, dim: int, out_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, out_features)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def modulations(self, cond: torch.Tensor) -> Chunks:
        return self.adaLN_modulation(cond)[:, :, None, None].chunk(2, dim=-1)

    def forward(self, x: torch.Tensor, mods: Chunks) -> torch.Tensor:
        shift, scale = mods
        return self.linear(modulate(layer_norm(x), shift, scale))


class OasisDiT(Placed, nn.Module):
    """Constructor arguments are those of the reference `DiT` (see dit.json in the fixtures)."""

    def __init__(self, input_h: int = 18, input_w: int = 32, patch_size: int = 2, in_channels: int = 16,
                 hidden_size: int = 1024, depth: int = 16, num_heads: int = 16, mlp_ratio: float = 4.0,
                 external_cond_dim: int = 25, max_frames: int = 32) -> None:
        super().__init__()
        if hidden_size % num_heads or (hidden_size // num_heads) % 4:
            raise ValueError(f"hidden_size {hidden_size} / num_heads {num_heads} must give a head size divisible by 4")
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.grid = (input_h // patch_size, input_w // patch_size)
        self.max_frames = max_frames
        self.heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.external_cond_dim = external_cond_dim
        self.x_embedder = PatchEmbed(patch_size, in_channels, hidden_size)
        self.t_embedder = NoiseLevelEmbed(hidden_size)
        self.spatial_rotary_emb = RotaryFrequencies(pixel_frequencies(self.head_dim // 2, 256))
        self.temporal_rotary_emb = RotaryFrequencies(language_frequencies(self.head_dim))
        self.external_cond = nn.Linear(external_cond_dim, hidden_size) if external_cond_dim else None
        self.blocks = nn.ModuleList(
            DiTBlock(hidden_size, num_heads, mlp_ratio, self.spatial_rotary_emb, self.temporal_rotary_emb)
            for _ in range(depth)
        )
        self.final_layer = FinalLayer(hidden_size, patch_size * patch_size * in_channels)

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def conditioning(self, levels: torch.Tensor, actions: torch.Tensor | None) -> torch.Tensor:
        """Per-frame conditioning vector (B, T, D) from noise levels (B, T) and actions (B, T, A)."""
        cond = self.t_embedder(levels)
        if actions is not None and self.external_cond is not None:
            cond = cond + self.external_cond(actions.to(cond.dtype))
        return cond

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        return self.x_embedder(x.flatten(0, 1)).unflatten(0, (b, t))

    def unpatchify(self, y: torch.Tensor) -> torch.Tensor:
        """(B, T, h, w, p*p*C) with features ordered (py, px, ch) -> (B, T, C, h*p, w*p)."""
        b, t, h, w, _ = y.shape
        p, c = self.patch_size, self.in_channels
        y = y.reshape(b, t, h, w, p, p, c).permute(0, 1, 6, 2, 4, 3, 5)
        return y.reshape(b, t, c, h * p, w * p)

    def spatial_angles(self) -> torch.Tensor:
        return axial_angles(*self.grid, self.spatial_rotary_emb.freqs)

    def temporal_angles(self, start: int, count: int) -> torch.Tensor:
        positions = torch.arange(start, start + count, device=self.temporal_rotary_emb.freqs.device)
        return pair_angles(positions, self.temporal_rotary_emb.freqs)

    def forward(self, x: torch.Tensor, t: torch.Tensor, external_cond: torch.Tensor | None = None) -> torch.Tensor:
        """Reference forward: x (B, T, C, H, W), t (B, T) noise levels -> v-prediction (B, T, C, H, W)."""
        return self._run(x, self.modulations(t, external_cond), cache=None, start=0)

    def new_cache(self, batch: int, capacity: int | None = None) -> TemporalCache:
        """Preallocate a temporal key/value cache for `capacity` frames (default: max_frames)."""
        capacity = capacity or self.max_frames
        shape = (self.depth, batch * self.grid[0] * self.grid[1], self.heads, capacity, self.head_dim)
        return TemporalCache(torch.zeros(shape, dtype=self.dtype, device=self.device),
                             torch.zeros(shape, dtype=self.dtype, device=self.device))

    def modulations(self, levels: torch.Tensor, actions: torch.Tensor | None) -> Modulations:
        """adaLN outputs for noise levels (B, T) and actions (B, T, A), one set per frame."""
        cond = self.conditioning(levels, actions)
        return Modulations([block.modulations(cond) for block in self.blocks], self.final_layer.modulations(cond))

    def forward_cached(self, x: torch.Tensor, t: torch.Tensor, external_cond: torch.Tensor | None,
                       cache: TemporalCache, start: int, keys_only: bool = False) -> torch.Tensor | None:
        """Run frames at window positions start .. start+T-1 against cached context frames 0 .. start-1.

        Their keys/values are written into the cache at those slots; committing them as context
        (cache.length) is the caller's decision. With `keys_only` (filling the cache with context
        frames) the work after the last keys/values is skipped and None is returned.
        """
        return self.forward_modulated(x, self.modulations(t, external_cond), cache, start, keys_only)

    def forward_modulated(self, x: torch.Tensor, mods: Modulations, cache: TemporalCache, start: int,
                          keys_only: bool = False) -> torch.Tensor | None:
        """`forward_cached` with the adaLN outputs already computed (see `modulations`)."""
        if start + x.shape[1] > cache.capacity:
            raise ValueError(f"frames {start}..{start + x.shape[1] - 1} exceed the cache of {cache.capacity}")
        return self._run(x, mods, cache=cache, start=start, keys_only=keys_only)

    def _run(self, x: torch.Tensor, mods: Modulations, cache: TemporalCache | None, start: int,
             keys_only: bool = False) -> torch.Tensor | None:
        tokens = self.patchify(x)
        s_rope = rotation_table(self.spatial_angles()[:, :, None, None], tokens.dtype)
        t_rope = rotation_table(self.temporal_angles(start, x.shape[1])[:, None, None, None, None], tokens.dtype)
        last = self.depth - 1
        for i, (block, (s_mods, t_mods)) in enumerate(zip(self.blocks, mods.blocks, strict=True)):
            tokens = block.spatial(tokens, s_mods, s_rope)
            layer_cache = None if cache is None else (cache.keys[i], cache.values[i])
            tokens = block.temporal(tokens, t_mods, t_rope, layer_cache, start, keys_only and i == last)
        if tokens is None:
            return None
        return self.unpatchify(self.final_layer(tokens, mods.final))
