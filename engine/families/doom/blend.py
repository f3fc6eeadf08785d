"""Where the dream shows what it recalled: a per-pixel choice between the world model's frame and its recalled
frames, each redrawn from the new pose (`reproject`).

A one-step denoiser makes a plausible but soft frame of a place it saw long ago, while the reprojected recalled
frame has that place's detail where its depth is right and the place has not changed (measured on doom-val
revisits: the shipped model with its recalled frames scores 20.33 dB, the same frame mixed half and half with the
first reprojected recalled frame wherever that one was drawn 21.64). The blend network looks at the model's frame,
the reprojected frames, where each was drawn and their poses relative to the new one, and gives per pixel softmax
weights over the model's frame and each recalled one. It is trained alone (`loss.blend_weight`), on the frames the
play sampler makes, with the world model frozen: the mixture's squared error against the real next frame; first
from real context frames (`--config doom_blend`), then after 3 open-loop ticks of the dream (`data.rollout`,
`--config doom_blend_rollout`), where the model's frame is worse and the recalled ones count for more.
With `blend_newest` the newest context frame, redrawn from the new pose by its predicted depth
(`world.newest_view`), is one more source, the last slot: in a static place the next frame is mostly the last one
seen from where the player moved to, with the detail a one-step sampler blurs, and the model's frame fills what
it does not show (what came into view, the weapon's motion).
Output-space mixing with a learned mask is the occlusion-aware warping of video prediction (e.g. Liu et al. 2017,
"Video Frame Synthesis using Deep Voxel Flow"), here with the 3-D warp the poses and depth give.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.eval.metrics import psnr_db

SPACE_TO_DEPTH = 2


class MemoryBlend(nn.Module):
    """(model frame, recalled frames, drawn masks, pose features) -> per-pixel weights over 1 + memory frames."""

    def __init__(self, memory: int, width: int, pose_features: int) -> None:
        super().__init__()
        self.memory = int(memory)
        pixels = (3 + 7 * self.memory) * SPACE_TO_DEPTH**2  # frame, recalled frames, their differences, drawn
        self.body = nn.Sequential(nn.Conv2d(pixels + pose_features * self.memory, width, 3, padding=1), nn.SiLU(),
                                  nn.Conv2d(width, width, 3, padding=2, dilation=2), nn.SiLU(),
                                  nn.Conv2d(width, width, 3, padding=1), nn.SiLU())
        self.head = nn.Conv2d(width, (1 + self.memory) * SPACE_TO_DEPTH**2, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        with torch.no_grad():  # untrained, it shows the model's frame (weight ~0.98)
            self.head.bias.copy_(torch.tensor([4.0] + [0.0] * self.memory).repeat_interleave(SPACE_TO_DEPTH**2))

    def forward(self, frame: torch.Tensor, memory: torch.Tensor, drawn: torch.Tensor,
                memory_pose: torch.Tensor) -> torch.Tensor:
        """frame (B, 3, H, W), memory (B, 3m, H, W) in [-1, 1]; drawn (B, m, H, W); memory_pose (B, m, pose_features),
        whose last feature says whether the slot holds a frame -> the mixed frame (B, 3, H, W)."""
        batch, _, height, width = frame.shape
        pixels = torch.cat([frame, memory, (memory - frame.repeat(1, self.memory, 1, 1)).abs(), drawn.to(frame)], 1)
        x = F.pixel_unshuffle(pixels, SPACE_TO_DEPTH)
        poses = memory_pose.flatten(1).to(frame)[:, :, None, None].expand(-1, -1, *x.shape[-2:])
        logits = F.pixel_shuffle(self.head(self.body(torch.cat([x, poses], 1))), SPACE_TO_DEPTH)
        empty = memory_pose[..., -1] <= 0  # (B, m): slots without a frame get no weight
        logits = logits.float().masked_fill(torch.cat([torch.zeros_like(empty[:, :1]), empty], 1)[..., None, None],
                                            float("-inf"))
        weights = logits.softmax(1)
        sources = torch.cat([frame, memory], 1).float().reshape(batch, 1 + self.memory, 3, height, width)
        return (weights[:, :, None] * sources).sum(1)


def blend_loss(net: MemoryBlend, frame: torch.Tensor, memory: torch.Tensor, drawn: torch.Tensor,
               memory_pose: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean squared error of the mixture against the real frame, its mean PSNR); frames in [-1, 1]."""
    mixed = net(frame, memory, drawn, memory_pose)
    error = (mixed - target.float()).pow(2).flatten(1).mean(1)
    return error.mean(), psnr_db(error.detach()).mean()
