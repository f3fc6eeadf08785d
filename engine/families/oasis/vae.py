"""Oasis ViT autoencoder (etched-ai/open-oasis `vae.py`, "vit-l-20-shallow-encoder").

Images are cut into square patches, run through pre-norm ViT blocks whose attention applies
axial pixel RoPE to the first half of every head, and mapped to a diagonal Gaussian latent per
patch. Parameter names and shapes follow `vit-l-20.safetensors`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.core.module import Placed
from engine.families.oasis.rotary import (
    axial_angles,
    on_default_device,
    pixel_frequencies,
    rotation_table,
)
from kernels.rope import rotate_pairs


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, grid: tuple[int, int]) -> None:
        super().__init__()
        self.heads = heads
        self.grid = grid
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        head_dim = dim // heads
        freqs = pixel_frequencies(head_dim // 4, grid[0] * grid[1])
        self._exact_angles = axial_angles(*grid, freqs).flatten(0, 1)
        self.register_buffer("rotary_angles", on_default_device(self._exact_angles), persistent=False)

    def _apply(self, fn, recurse: bool = True):
        # The angle table stays exact float32 whatever dtype the weights are cast to.
        super()._apply(fn, recurse)
        if self.rotary_angles.device.type != "meta":
            self.rotary_angles = self._exact_angles.to(self.rotary_angles.device)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = (z.unflatten(-1, (self.heads, -1)).transpose(1, 2) for z in self.qkv(x).chunk(3, dim=-1))
        table = rotation_table(self.rotary_angles, q.dtype)
        q, k = rotate_pairs(q, table), rotate_pairs(k, table)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, grid: tuple[int, int]) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, grid)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(images).flatten(2).transpose(1, 2)


class OasisVAE(Placed, nn.Module):
    """Constructor arguments are those of the reference `AutoencoderKL` (see vae.json in the fixtures)."""

    def __init__(self, latent_dim: int = 16, input_height: int = 360, input_width: int = 640, patch_size: int = 20,
                 enc_dim: int = 1024, enc_depth: int = 6, enc_heads: int = 16, dec_dim: int = 1024,
                 dec_depth: int = 12, dec_heads: int = 16, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if input_height % patch_size or input_width % patch_size:
            raise ValueError(f"image {input_height}x{input_width} is not a multiple of patch {patch_size}")
        self.latent_dim = latent_dim
        self.patch_size = patch_size
        self.image_size = (input_height, input_width)
        self.grid = (input_height // patch_size, input_width // patch_size)
        self.patch_embed = PatchEmbed(patch_size, enc_dim)
        self.encoder = nn.ModuleList(Block(enc_dim, enc_heads, mlp_ratio, self.grid) for _ in range(enc_depth))
        self.enc_norm = nn.LayerNorm(enc_dim, eps=1e-6)
        self.quant_conv = nn.Linear(enc_dim, 2 * latent_dim)
        self.post_quant_conv = nn.Linear(latent_dim, dec_dim)
        self.decoder = nn.ModuleList(Block(dec_dim, dec_heads, mlp_ratio, self.grid) for _ in range(dec_depth))
        self.dec_norm = nn.LayerNorm(dec_dim, eps=1e-6)
        self.predictor = nn.Linear(dec_dim, 3 * patch_size * patch_size)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, 3, H, W) in [-1, 1] -> posterior mean and clamped log-variance, each (B, N, latent_dim)."""
        x = self.patch_embed(images)
        for block in self.encoder:
            x = block(x)
        mean, logvar = self.quant_conv(self.enc_norm(x)).chunk(2, dim=-1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (B, N, latent_dim) -> images (B, 3, H, W), patch features ordered (channel, py, px)."""
        x = self.post_quant_conv(latents)
        for block in self.decoder:
            x = block(x)
        y = self.predictor(self.dec_norm(x))
        b, p = y.shape[0], self.patch_size
        rows, cols = self.grid
        y = y.reshape(b, rows, cols, 3, p, p).permute(0, 3, 1, 4, 2, 5)
        return y.reshape(b, 3, rows * p, cols * p)
