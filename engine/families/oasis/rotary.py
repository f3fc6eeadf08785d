"""Rotary position embeddings in the interleaved-pair convention.

Oasis (etched-ai/open-oasis, via lucidrains' rotary-embedding-torch) rotates feature pairs
(x[2j], x[2j+1]) by angle a_j, and "pixel" axial embeddings use positions linspace(-1, 1, n).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def pixel_frequencies(dim: int, max_freq: float) -> torch.Tensor:
    """Frequencies of a "pixel" rotary embedding of `dim` features: linspace(1, max_freq / 2, dim / 2) * pi."""
    return torch.linspace(1.0, max_freq / 2, dim // 2, dtype=torch.float32, device="cpu") * math.pi


def language_frequencies(dim: int, theta: float = 10000.0) -> torch.Tensor:
    """Frequencies 1 / theta^(2j / dim), j = 0 .. dim/2 - 1."""
    return 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float32, device="cpu")[: dim // 2] / dim)


def on_default_device(table: torch.Tensor) -> torch.Tensor:
    """Copy a CPU-computed table to the current default device (a `with torch.device(...)` block)."""
    out = torch.empty(table.shape, dtype=table.dtype)
    return out if out.device.type == "meta" else out.copy_(table)


class RotaryFrequencies(nn.Module):
    """Holds a frozen `freqs` parameter (the checkpoint stores it) and keeps it in float32.

    Angles reach 128*pi, which bf16/fp16 cannot hold precisely, so any dtype cast of the model
    recomputes the exact float32 values instead of rounding them.
    """

    def __init__(self, freqs: torch.Tensor) -> None:
        super().__init__()
        self._exact = freqs.detach().to("cpu", torch.float32).clone()
        self.freqs = nn.Parameter(on_default_device(self._exact), requires_grad=False)

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        if self.freqs.device.type != "meta":
            self.freqs.data = self._exact.to(self.freqs.device)
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        loaded = state_dict.get(prefix + "freqs")
        if loaded is not None:
            self._exact = loaded.detach().to("cpu", torch.float32).clone()
            self.freqs.data = self._exact.to(self.freqs.device)


def pair_angles(positions: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Angles (..., 2 * len(freqs)) for `positions`, each angle repeated for its feature pair."""
    angles = positions.to(torch.float32)[..., None] * freqs.to(torch.float32)
    return angles.repeat_interleave(2, dim=-1)


def axial_angles(height: int, width: int, freqs: torch.Tensor) -> torch.Tensor:
    """Angles (height, width, 4 * len(freqs)): row angles first, then column angles (pixel positions)."""
    rows = pair_angles(torch.linspace(-1.0, 1.0, height, device=freqs.device), freqs)
    cols = pair_angles(torch.linspace(-1.0, 1.0, width, device=freqs.device), freqs)
    return torch.cat(
        [rows[:, None, :].expand(height, width, -1), cols[None, :, :].expand(height, width, -1)], dim=-1
    )


def rotation_table(angles: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) of `angles` for `rotate_pairs`, computed in float32 and cast once for every layer."""
    return angles.cos().to(dtype), angles.sin().to(dtype)
