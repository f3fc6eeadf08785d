"""Token masks of WorldMAR: which target tokens are hidden (MAR masking), which context tokens are
dropped in training, and the attention validity that follows (`WorldMAR.random_masking`,
`construct_attn_masks` in nwrousell/world-mar `models/mar.py`).

Frame axis: index 0 is the frame to predict, 1 .. P-1 the previous frames (P = `num_prev_frames`),
then memory frames, then padding. Token masks are (B, h*w) over the grid flattened row-major; the
attention sees one more row per frame (the buffer row, last), which is never masked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import torch

from engine.families.worldmar.blocks import AxisMask

MASK_RATE_SCALE = 0.25


@dataclass(frozen=True)
class TokenValidity:
    """Per-token validity vectors: spatial (B, T, L) and temporal (B, L, T), for encoder and decoder."""

    spatial_enc: torch.Tensor
    spatial_dec: torch.Tensor
    temporal_enc: torch.Tensor
    temporal_dec: torch.Tensor

    def axis_masks(self) -> tuple[AxisMask, AxisMask, AxisMask, AxisMask]:
        """(encoder spatial, encoder temporal, decoder spatial, decoder temporal) attention masks."""
        return tuple(AxisMask.from_valid(v.flatten(0, 1))
                     for v in (self.spatial_enc, self.temporal_enc, self.spatial_dec, self.temporal_dec))


def padding_mask(batch_nframes: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, T) True for the first `batch_nframes[b]` frames of sample b (the others are padding)."""
    return torch.arange(frames, device=batch_nframes.device)[None, :] < batch_nframes[:, None]


def with_buffer_row(mask: torch.Tensor, width: int) -> torch.Tensor:
    """(..., h*w) -> (..., (h+1)*w): the buffer row appended, never masked."""
    return torch.cat([mask, mask.new_zeros((*mask.shape[:-1], width))], dim=-1)


def token_validity(pred_mask: torch.Tensor, ctx_mask: torch.Tensor | None, padding: torch.Tensor,
                   ctx_overrides_padding: bool) -> TokenValidity:
    """Validity of every token for attention.

    pred_mask (B, L): hidden target tokens; ctx_mask (B, P-1, L) or None: dropped tokens of frames
    1 .. P-1 (training only); padding (B, T). The reference *assigns* `~ctx` to the spatial validity
    of frames 0 .. P-1, which forgets that some of them may be padding; `ctx_overrides_padding`
    reproduces that, otherwise the two are combined.
    """
    b, length = pred_mask.shape
    frames = padding.shape[1]
    spatial = padding[:, :, None].expand(b, frames, length).clone()
    temporal = padding[:, None, :].expand(b, length, frames).clone()
    if ctx_mask is not None:
        dropped = torch.cat([torch.zeros_like(pred_mask)[:, None], ctx_mask], dim=1)[:, :frames]
        p = dropped.shape[1]
        spatial[:, :p] = ~dropped if ctx_overrides_padding else spatial[:, :p] & ~dropped
        temporal[:, :, :p] &= ~dropped.transpose(1, 2)
    spatial_enc, temporal_enc = spatial.clone(), temporal.clone()
    spatial_enc[:, 0] = ~pred_mask
    temporal_enc[:, :, 0] = ~pred_mask
    return TokenValidity(spatial_enc, spatial, temporal_enc, temporal)


def mask_from_orders(orders: torch.Tensor, count: int) -> torch.Tensor:
    """(B, n) bool: True at the first `count` entries of each row's permutation `orders`."""
    mask = torch.zeros(orders.shape, dtype=torch.bool, device=orders.device)
    return mask.scatter(-1, orders[:, :count], True)


def masked_counts(tokens: int, rate: float, prev_masking_rate: float) -> tuple[int, int]:
    """(hidden target tokens, dropped tokens per previous frame) for masking rate `rate`."""
    hidden = math.floor(tokens * rate)
    return hidden, int(hidden * prev_masking_rate)


def truncated_mask_rate(uniform: float, mask_ratio_min: float) -> float:
    """The training masking rate: truncnorm on [mask_ratio_min, 1] with mean 1, scale 0.25 (as MAR),
    by inverse CDF of a uniform draw."""
    normal = NormalDist()
    lo, hi = normal.cdf((mask_ratio_min - 1.0) / MASK_RATE_SCALE), normal.cdf(0.0)
    return 1.0 + MASK_RATE_SCALE * normal.inv_cdf(lo + uniform * (hi - lo))


def random_orders(batch: int, tokens: int, device: torch.device,
                  generator: torch.Generator | None) -> torch.Tensor:
    """(B, n) int64: one uniform random permutation per row."""
    gen_device = generator.device if generator is not None else device
    return torch.rand((batch, tokens), generator=generator, device=gen_device).argsort(dim=-1).to(device)
