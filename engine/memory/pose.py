"""Camera pose math as WorldMAR computes it: camera-to-world matrices, relative poses, Plücker rays.

A pose is `(x, y, z, pitch, yaw)` in Minecraft blocks and degrees. The camera-to-world rotation is
`R_yaw @ R_pitch` with the camera looking along its local +z, so positive pitch looks *down* here
(the FOV test in `retrieval` uses the opposite sign; both follow the reference).
"""

from __future__ import annotations

import torch

DEFAULT_FOCAL_LENGTH = 0.35
DEFAULT_IMAGE_WIDTH = 640
DEFAULT_IMAGE_HEIGHT = 320
TOKEN_ROW_STRIDE = 36
TOKEN_COL_STRIDE = 40


def rotation_matrix(pitch: torch.Tensor, yaw: torch.Tensor) -> torch.Tensor:
    """`R_yaw @ R_pitch` for angles in degrees; shape `(*pitch.shape, 3, 3)`."""
    p, y = torch.deg2rad(pitch), torch.deg2rad(yaw)
    cp, sp, cy, sy = torch.cos(p), torch.sin(p), torch.cos(y), torch.sin(y)
    zero, one = torch.zeros_like(p), torch.ones_like(p)
    r_pitch = torch.stack([one, zero, zero, zero, cp, -sp, zero, sp, cp], dim=-1).unflatten(-1, (3, 3))
    r_yaw = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], dim=-1).unflatten(-1, (3, 3))
    return r_yaw @ r_pitch


def camera_to_world(poses: torch.Tensor) -> torch.Tensor:
    """Poses `(..., 5)` -> camera-to-world matrices `(..., 4, 4)`."""
    c2w = torch.zeros((*poses.shape[:-1], 4, 4), dtype=poses.dtype, device=poses.device)
    c2w[..., :3, :3] = rotation_matrix(poses[..., 3], poses[..., 4])
    c2w[..., :3, 3] = poses[..., :3]
    c2w[..., 3, 3] = 1
    return c2w


def reference_camera_to_world(poses: torch.Tensor) -> torch.Tensor:
    """The reference's shape rules: `(5,)` -> `(4, 4)`, `(F, B, 5)` -> `(F, B, 4, 4)`, and a `(T, 5)`
    matrix -> `(1, T, 4, 4)` (frames on the batch axis, which the dataloader relies on)."""
    if poses.ndim == 2:
        return camera_to_world(poses).unsqueeze(0)
    return camera_to_world(poses)


def world_to_camera(c2w: torch.Tensor) -> torch.Tensor:
    """Inverse of a rigid camera-to-world matrix: `[[R^T, -R^T t], [0, 1]]`."""
    rot_t = c2w[..., :3, :3].transpose(-1, -2)
    w2c = torch.zeros_like(c2w)
    w2c[..., :3, :3] = rot_t
    w2c[..., :3, 3] = -(rot_t @ c2w[..., :3, 3:4]).squeeze(-1)
    w2c[..., 3, 3] = 1
    return w2c


def relative_pose(c2w: torch.Tensor, curr_frame: int) -> torch.Tensor:
    """`w2c[curr_frame] @ c2w[t]` for every frame t of `(T, B, 4, 4)` matrices (`curr_frame` may be negative)."""
    return world_to_camera(c2w[curr_frame]).unsqueeze(0) @ c2w


def camera_rays(focal_length: float = DEFAULT_FOCAL_LENGTH, image_width: int = DEFAULT_IMAGE_WIDTH,
                image_height: int = DEFAULT_IMAGE_HEIGHT, rows: torch.Tensor | None = None,
                cols: torch.Tensor | None = None, dtype: torch.dtype = torch.float32,
                device: torch.device | str | None = None) -> torch.Tensor:
    """Unit camera-space ray directions `(H', W', 3)` at pixel centres of the given rows/columns (all by
    default). Both image axes are negated and `fx = f·W`, `fy = f·H`, as in the reference."""
    fx, fy = focal_length * image_width, focal_length * image_height
    cx, cy = 0.5 * image_width, 0.5 * image_height
    if rows is None:
        rows = torch.arange(image_height, device=device)
    if cols is None:
        cols = torch.arange(image_width, device=device)
    v = rows.to(dtype) + 0.5
    u = cols.to(dtype) + 0.5
    xs = (-(u - cx) / fx).expand(len(v), len(u))
    ys = (-(v - cy) / fy)[:, None].expand(len(v), len(u))
    dirs = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1)
    return dirs / dirs.norm(dim=-1, keepdim=True)


def token_rays(focal_length: float = DEFAULT_FOCAL_LENGTH, image_width: int = DEFAULT_IMAGE_WIDTH,
               image_height: int = DEFAULT_IMAGE_HEIGHT, dtype: torch.dtype = torch.float32,
               device: torch.device | str | None = None) -> torch.Tensor:
    """The rays of `camera_rays` at the pixels WorldMAR's tokens read (`[::36, ::40]`): (9, 16, 3) by default."""
    rows = torch.arange(0, image_height, TOKEN_ROW_STRIDE, device=device)
    cols = torch.arange(0, image_width, TOKEN_COL_STRIDE, device=device)
    return camera_rays(focal_length, image_width, image_height, rows, cols, dtype, device)


def plucker_from_relative(rel_c2w: torch.Tensor, rays: torch.Tensor) -> torch.Tensor:
    """Plücker embedding `(o × d, d)` of camera rays `(H, W, 3)` under relative poses `(..., 4, 4)`:
    returns `(..., H, W, 6)`."""
    rot = rel_c2w[..., None, None, :3, :3]
    d = (rot @ rays[..., None]).squeeze(-1)
    o = rel_c2w[..., None, None, :3, 3].expand_as(d)
    return torch.cat([torch.linalg.cross(o, d, dim=-1), d], dim=-1)


def plucker(c2w: torch.Tensor, curr_frame: int, focal_length: float = DEFAULT_FOCAL_LENGTH,
            image_width: int = DEFAULT_IMAGE_WIDTH, image_height: int = DEFAULT_IMAGE_HEIGHT,
            token_grid: bool = False) -> torch.Tensor:
    """`convert_to_plucker`: camera-to-world `(T, B, 4, 4)` -> `(T, B, H, W, 6)` relative to frame
    `curr_frame`. With `token_grid`, only the rays the model reads (`[::36, ::40]`) are computed."""
    rays = (token_rays if token_grid else camera_rays)(focal_length, image_width, image_height,
                                                      dtype=c2w.dtype, device=c2w.device)
    return plucker_from_relative(relative_pose(c2w, curr_frame), rays)
