"""Per-frame inputs of WorldMAR besides the latents: Plücker maps at the token grid and timestamps.

The model reads one camera ray per token: pixel rows 0, 36, ..., 288 and columns 0, 40, ..., 600
of the reference's 320x640 Plücker map (`poses[:, :, ::36, ::40]`), so only those rays are computed.

Reference behaviour (`reference_compat=True`): the reference dataloader calls the pose functions
with a (T, 5) matrix, which makes every frame's pose relative to *itself*, i.e. the identity, so
every non-padding frame gets the same map (zero moment, fixed camera rays) and checkpoints trained
with it saw no pose information. Corrected behaviour: each frame's camera relative to the target
frame's (frame 0), the map the reference intended.
"""

from __future__ import annotations

import torch

from engine.families.worldmar.masks import padding_mask
from engine.memory.pose import (
    camera_to_world,
    plucker_from_relative,
    token_rays,
    world_to_camera,
)


def plucker_tokens(poses: torch.Tensor, batch_nframes: torch.Tensor, reference_compat: bool) -> torch.Tensor:
    """Plücker maps (B, T, 9, 16, 6) for poses (B, T, 5) (x, y, z, pitch, yaw; frame 0 = target).

    Padding frames (t >= batch_nframes[b]) get zeros whatever their pose (NaN allowed there).
    """
    b, t = poses.shape[:2]
    rays = token_rays(dtype=poses.dtype, device=poses.device)
    if reference_compat:
        relative = torch.eye(4, dtype=poses.dtype, device=poses.device).expand(b, t, 4, 4)
    else:
        c2w = camera_to_world(poses)
        relative = world_to_camera(c2w[:, :1]) @ c2w
    maps = plucker_from_relative(relative, rays)
    valid = padding_mask(batch_nframes, t)[:, :, None, None, None]
    return torch.where(valid, maps, torch.zeros((), dtype=maps.dtype, device=maps.device))


def frame_timestamps(frame_numbers: torch.Tensor, batch_nframes: torch.Tensor) -> torch.Tensor:
    """(B, T) int64 timestamps from frame numbers (B, T) (frame 0 = target): `frame - target`, and
    `-1 - target` for padding frames, as the reference dataloader writes them."""
    target = frame_numbers[:, :1]
    valid = padding_mask(batch_nframes, frame_numbers.shape[1])
    return torch.where(valid, frame_numbers - target, -1 - target).to(torch.int64)
