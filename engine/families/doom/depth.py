"""The depth of a Doom frame, predicted from its pixels, so that dreamed frames can be reprojected too
(`reproject`): the memory bank holds the model's own frames in play, which have no depth buffer.

A small convolutional encoder-decoder at the world model's 2x2 space-to-depth resolution: it predicts the log of
the planar depth in map units and, per pixel, whether the pixel has no depth at all (the weapon, which the game's
depth buffer draws at 0 and which stays in place on screen whatever the pose). Trained on the game's depth
buffer (`engine.families.vizdoom.game.DoomGame.depth`) next to the denoising loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DEPTH_SCALE = 256.0  # map units of a log-depth of 0
SPACE_TO_DEPTH = 2


def _block(channels_in: int, channels_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels_in, channels_out, 3, stride=stride, padding=1),
                         nn.GroupNorm(8, channels_out), nn.SiLU(),
                         nn.Conv2d(channels_out, channels_out, 3, padding=1), nn.GroupNorm(8, channels_out), nn.SiLU())


class DepthNet(nn.Module):
    """frames (B, 3, H, W) in [-1, 1] -> (log depth / DEPTH_SCALE, no-depth logit), each (B, H, W)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        c = width
        self.enc1 = _block(3 * SPACE_TO_DEPTH**2, c)
        self.enc2 = _block(c, 2 * c, stride=2)
        self.enc3 = _block(2 * c, 4 * c, stride=2)
        self.dec2 = _block(4 * c + 2 * c, 2 * c)
        self.dec1 = _block(2 * c + c, c)
        self.head = nn.Conv2d(c, 2 * SPACE_TO_DEPTH**2, 3, padding=1)

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x1 = self.enc1(F.pixel_unshuffle(frames, SPACE_TO_DEPTH))
        x2 = self.enc2(x1)
        x3 = self.enc3(x2)
        y = self.dec2(torch.cat([F.interpolate(x3, size=x2.shape[-2:]), x2], 1))
        y = self.dec1(torch.cat([F.interpolate(y, size=x1.shape[-2:]), x1], 1))
        out = F.pixel_shuffle(self.head(y), SPACE_TO_DEPTH)
        return out[:, 0], out[:, 1]

    def depth(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, H, W) planar depth in map units; 0 where the frame shows no depth (the weapon)."""
        log_depth, none = self(frames)
        return torch.where(none > 0, torch.zeros_like(log_depth), log_depth.float().exp() * DEPTH_SCALE)


def depth_loss(net: DepthNet, frames: torch.Tensor, depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L1 of log depth where there is depth + the no-depth BCE, mean relative error); depth (B, H, W) map units."""
    log_depth, none = net(frames)
    has = depth > 0
    target = (depth.clamp(min=1) / DEPTH_SCALE).log()
    l1 = ((log_depth.float() - target).abs() * has).sum() / has.sum().clamp(min=1)
    bce = F.binary_cross_entropy_with_logits(none.float(), (~has).float())
    with torch.no_grad():
        relative = (((log_depth.float().exp() * DEPTH_SCALE - depth).abs() / depth.clamp(min=1)) * has).sum()
        relative = relative / has.sum().clamp(min=1)
    return l1 + bce, relative
