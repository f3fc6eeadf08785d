"""WorldMAR's retrieval written the way the reference runs it: one FOV test per stored pose in a Python
loop, then the greedy top-k. Kept as the benchmark baseline and the oracle for `retrieval`."""

from __future__ import annotations

import math

import torch

from engine.memory.retrieval import FOV_HALF_H, FOV_HALF_V, RECENCY_WEIGHT


def in_fov_single(points: torch.Tensor, center: torch.Tensor, pitch: torch.Tensor, yaw: torch.Tensor) -> torch.Tensor:
    """`is_inside_fov_3d_hv`: FOV test of `(N, 3)` points for one camera; `(N,)` bool."""
    vectors = points - center
    x, y, z = vectors[..., 0], vectors[..., 1], vectors[..., 2]
    azimuth = torch.atan2(x, z) * (180 / math.pi)
    elevation = torch.atan2(y, torch.sqrt(x**2 + z**2)) * (180 / math.pi)
    diff_azimuth = (azimuth - yaw).abs() % 360
    diff_elevation = (elevation - pitch).abs() % 360
    diff_azimuth = torch.where(diff_azimuth > 180, 360 - diff_azimuth, diff_azimuth)
    diff_elevation = torch.where(diff_elevation > 180, 360 - diff_elevation, diff_elevation)
    return (diff_azimuth < FOV_HALF_H) & (diff_elevation < FOV_HALF_V)


def reference_retrieve(target_pose: torch.Tensor, other_poses: torch.Tensor, points: torch.Tensor,
                       num_prev_frames: int, min_overlap: float = 0.05, k: int = 3) -> torch.Tensor:
    """`get_most_relevant_poses_to_target(..., do_optim=True)`: indices of up to k candidates."""
    target = target_pose.clone()
    others = other_poses.clone()
    others[:, :3] -= target[:3]
    target[:3] = 0
    in_fov1 = in_fov_single(points, target[:3], target[-2], target[-1])
    points = points[in_fov1]
    in_fov1 = in_fov1[in_fov1]
    in_fov_list = torch.stack([in_fov_single(points, pose[:3], pose[-2], pose[-1]) for pose in others])
    min_overlap_points = in_fov1.sum() * min_overlap
    top_k: list[int] = list(range(num_prev_frames))
    for idx in range(num_prev_frames):
        if idx < len(in_fov_list):
            in_fov1 = in_fov1 & ~in_fov_list[idx]
    num_poses = others.shape[0]
    for _ in range(k - num_prev_frames):
        if in_fov1.sum() <= min_overlap_points:
            break
        ratio = (in_fov1 & in_fov_list).sum(1) / in_fov1.sum()
        confidence = ratio + torch.arange(num_poses, 0, -1) / num_poses * (-RECENCY_WEIGHT)
        # The reference wraps this in a bare try/except; out-of-range forced indices come first, so
        # the in-range ones before them are written and the rest of the assignment is skipped.
        first_bad = next((n for n, i in enumerate(top_k) if i >= num_poses), len(top_k))
        if first_bad:
            confidence[torch.tensor(top_k[:first_bad])] = -1e10
        best = int(torch.topk(confidence, k=1, dim=0).indices[0])
        top_k.append(best)
        in_fov1 = in_fov1 & ~in_fov_list[best]
    return torch.tensor(top_k, dtype=torch.int64)
