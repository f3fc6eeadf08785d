"""Vectorised memory retrieval: which stored frames see what the current camera sees.

Reproduces WorldMAR's `get_most_relevant_poses_to_target` (do_optim=True) exactly, quirks included
(fixture README section 2 and 8): candidates are shifted to target-centred coordinates while the
sample points stay put; the first `num_prev_frames` indices are always returned; the greedy loop runs
while more than `min_overlap · visible` points remain uncovered, scores the remaining-point ratio
plus a recency term that favours later indices, and carves the picked frame's points.

Instead of one atan2-based FOV test per stored pose, visibility of every (candidate, point) pair is
decided by sign tests of products, which are exact rewrites of the angle comparisons:
`|azimuth − yaw| < 52.5°` is the wedge between two vertical half-planes, and the elevation band
`(pitch − 37.5°, pitch + 37.5°)` (wrapped onto [−90°, 90°]) compares `y·|y|·cos²a` with
`h²·sin a·|sin a|` (h = horizontal distance), the sign-preserving square of `y·cos a` vs `h·sin a`.
They differ from the reference's float32 atan2 only for points within float rounding of an FOV edge
(the fixtures drop such points) and for points exactly on a camera's vertical axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

FOV_HALF_H = 52.5
FOV_HALF_V = 37.5
RECENCY_WEIGHT = 0.2
EXCLUDED = -1e10
DEFAULT_CHUNK_ELEMENTS = 1 << 16
CULL_MARGIN_DEG = 0.01


def generate_points_in_sphere(n_points: int, radius: float, generator: torch.Generator | None = None,
                              device: torch.device | str | None = None) -> torch.Tensor:
    """Uniform points in a ball `(n_points, 3)`; with the global RNG it draws as the reference does."""
    u_r = torch.rand(n_points, generator=generator, device=device)
    u_phi = torch.rand(n_points, generator=generator, device=device)
    u_theta = torch.rand(n_points, generator=generator, device=device)
    r = radius * torch.pow(u_r, 1 / 3)
    phi = 2 * math.pi * u_phi
    theta = torch.acos(1 - 2 * u_theta)
    return torch.stack((r * torch.sin(theta) * torch.cos(phi), r * torch.sin(theta) * torch.sin(phi),
                        r * torch.cos(theta)), dim=1)


def _fov_coefficients(poses: torch.Tensor) -> torch.Tensor:
    """Per-camera constants `(P, 8)` of the sign tests: wedge (cos, sin of yaw ∓ 52.5°) and the
    elevation band's lower/upper (cos²a, sin a·|sin a|) pairs after wrapping pitch onto [−90°, 90°]."""
    pitch = poses[:, 3].double()
    yaw = poses[:, 4].double()
    a1 = torch.deg2rad(yaw - FOV_HALF_H)
    a2 = torch.deg2rad(yaw + FOV_HALF_H)
    # The arc of elevations within 37.5° of pitch meets [-90°, 90°] in at most one interval.
    centre = torch.remainder(pitch + 180, 360) - 180
    lo = torch.full_like(pitch, math.inf)
    hi = torch.full_like(pitch, -math.inf)
    for shift in (-360.0, 0.0, 360.0):
        c_lo = torch.clamp(centre + shift - FOV_HALF_V, min=-90)
        c_hi = torch.clamp(centre + shift + FOV_HALF_V, max=90)
        hit = c_lo < c_hi
        lo = torch.where(hit, c_lo, lo)
        hi = torch.where(hit, c_hi, hi)
    empty = torch.isinf(lo)
    s_lo, s_hi = torch.sin(torch.deg2rad(lo)), torch.sin(torch.deg2rad(hi))
    lo_a = torch.cos(torch.deg2rad(lo)) ** 2
    lo_b = s_lo * s_lo.abs()
    hi_a = torch.cos(torch.deg2rad(hi)) ** 2
    hi_b = s_hi * s_hi.abs()
    # Open ends: "y|y|·0 > −h²" and "y|y|·0 < h²" hold for every point off the vertical axis.
    lo_open = (lo <= -90) & ~empty
    lo_a = torch.where(lo_open | empty, 0.0, lo_a)
    lo_b = torch.where(lo_open, -1.0, torch.where(empty, 1.0, lo_b))
    hi_open = hi >= 90
    hi_a = torch.where(hi_open | empty, 0.0, hi_a)
    hi_b = torch.where(hi_open | empty, 1.0, hi_b)
    coeffs = torch.stack([torch.cos(a1), torch.sin(a1), torch.cos(a2), torch.sin(a2), lo_a, lo_b, hi_a, hi_b], 1)
    return coeffs.to(poses.dtype)


def in_fov(points: torch.Tensor, poses: torch.Tensor, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> torch.Tensor:
    """FOV test of `(N, 3)` points for `(P, 5)` cameras at once: `(P, N)` bool.

    Candidates are processed in chunks of about `chunk_elements` pairs, so memory stays bounded
    (a few float buffers of that size) whatever P is.
    """
    num_poses, num_points = poses.shape[0], points.shape[0]
    out = torch.empty((num_poses, num_points), dtype=torch.bool, device=points.device)
    if num_poses == 0 or num_points == 0:
        return out
    coeffs = _fov_coefficients(poses)
    px, py, pz = (points[:, i].contiguous() for i in range(3))
    rows = max(1, min(num_poses, chunk_elements // num_points))
    bufs = [torch.empty((rows, num_points), dtype=points.dtype, device=points.device) for _ in range(5)]
    flag = torch.empty((rows, num_points), dtype=torch.bool, device=points.device)
    for start in range(0, num_poses, rows):
        stop = min(start + rows, num_poses)
        n = stop - start
        x, y, z, t1, t2 = (b[:n] for b in bufs)
        vis, tmp = out[start:stop], flag[:n]
        c = coeffs[start:stop, :, None].unbind(1)
        cam = poses[start:stop, :3, None]
        torch.sub(px, cam[:, 0], out=x)
        torch.sub(py, cam[:, 1], out=y)
        torch.sub(pz, cam[:, 2], out=z)
        # Horizontal wedge: sin(az − (yaw − 52.5°)) > 0 and sin((yaw + 52.5°) − az) > 0.
        torch.gt(torch.mul(x, c[0], out=t1), torch.mul(z, c[1], out=t2), out=vis)
        vis &= torch.gt(torch.mul(z, c[3], out=t1), torch.mul(x, c[2], out=t2), out=tmp)
        torch.mul(x, x, out=t1).addcmul_(z, z)  # h²
        torch.abs(y, out=t2).mul_(y)  # y·|y|
        vis &= torch.gt(torch.mul(t2, c[4], out=x), torch.mul(t1, c[5], out=z), out=tmp)
        vis &= torch.lt(torch.mul(t2, c[6], out=x), torch.mul(t1, c[7], out=z), out=tmp)
    return out


def _circular_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    d = torch.remainder(a - b, 360)
    return torch.minimum(d, 360 - d)


def cull(points: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
    """Conservative per-camera test `(P,)` bool: False only where no point can be in view.

    The points lie in a ball (centre s, radius ρ); seen from a camera at distance D > ρ their
    directions stay within asin(ρ/D) of the direction to s, and their azimuths within asin(ρ/D_h).
    A camera is dropped when that cone misses its wedge or its elevation band by more than
    `CULL_MARGIN_DEG` (far above float32 rounding), so culling never changes a mask.
    """
    if points.shape[0] == 0:
        return torch.zeros(poses.shape[0], dtype=torch.bool, device=poses.device)
    pts = points.double()
    centre = (pts.amin(0) + pts.amax(0)) / 2
    radius = (pts - centre).norm(dim=1).max()
    d = centre - poses[:, :3].double()
    dist_h = torch.hypot(d[:, 0], d[:, 2])
    dist = torch.hypot(dist_h, d[:, 1])
    ratio_h = torch.clamp(radius / dist_h, max=1)
    spread_h = torch.rad2deg(torch.asin(ratio_h))
    spread = torch.rad2deg(torch.asin(torch.clamp(radius / dist, max=1)))
    azimuth = torch.rad2deg(torch.atan2(d[:, 0], d[:, 2]))
    elevation = torch.rad2deg(torch.atan2(d[:, 1], dist_h))
    pitch = poses[:, 3].double()
    az_out = _circular_distance(azimuth, poses[:, 4].double()) >= FOV_HALF_H + spread_h + CULL_MARGIN_DEG
    el_out = _circular_distance(elevation, pitch) >= FOV_HALF_V + spread + CULL_MARGIN_DEG
    inside = dist <= radius + CULL_MARGIN_DEG
    return inside | ~((az_out & (ratio_h < 1)) | el_out)


def target_centred(target_pose: torch.Tensor, other_poses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift candidates by the target position (float32, as the reference) and zero the target's."""
    target = target_pose.clone()
    others = other_poses.clone()
    others[:, :3] -= target[:3]
    target[:3] = 0
    return target, others


@dataclass
class Overlap:
    """Per-candidate view overlap with the target, before any greedy carving."""

    target_in_fov: torch.Tensor  # (N,) bool over all points
    candidate_in_fov: torch.Tensor  # (P, V) bool over the target-visible points
    kept: torch.Tensor  # (K,) int64: candidates not culled (all other rows of the mask are False)
    count: torch.Tensor  # (P,) int64
    ratio: torch.Tensor  # (P,) float


def compute_overlap(target_pose: torch.Tensor, other_poses: torch.Tensor, points: torch.Tensor,
                    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> Overlap:
    """FOV masks and overlap of every candidate with the target (points are already target-centred).

    Only cameras that `cull` keeps are tested; sizing that subset is the one host sync here.
    """
    target, others = target_centred(target_pose, other_poses)
    target_mask = in_fov(points, target[None], chunk_elements)[0]
    visible = points[target_mask]
    kept = cull(visible, others).nonzero().squeeze(1)
    mask = torch.zeros((others.shape[0], visible.shape[0]), dtype=torch.bool, device=points.device)
    mask[kept] = in_fov(visible, others[kept], chunk_elements)
    count = mask.sum(1)
    return Overlap(target_mask, mask, kept, count, count / target_mask.sum())


@dataclass
class Retrieval:
    """Greedy selection result; tensors stay on the device (no host sync until the accessors)."""

    slots: torch.Tensor  # (max(k, num_prev_frames),) int64; slots past `num_selected` are unused
    num_selected: torch.Tensor  # () int64
    trace_confidence: torch.Tensor  # (steps, P) confidence handed to topk at each greedy step
    trace_remaining: torch.Tensor  # (steps,) int64 uncovered points at the start of each step
    step_active: torch.Tensor  # (steps,) bool: the step ran (the loop had not stopped)
    overlap: Overlap

    @property
    def indices(self) -> torch.Tensor:
        """The reference's return value (length ≤ k)."""
        return self.slots[: int(self.num_selected)]

    @property
    def active_trace(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(confidence, remaining) of the greedy steps that actually ran."""
        return self.trace_confidence[self.step_active], self.trace_remaining[self.step_active]


def retrieve(target_pose: torch.Tensor, other_poses: torch.Tensor, points: torch.Tensor, num_prev_frames: int,
             min_overlap: float = 0.05, k: int = 3, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> Retrieval:
    """Pick up to k stored frames whose view overlaps the target's, exactly as WorldMAR does.

    The greedy loop always runs its `k − num_prev_frames` steps on the device and masks the steps
    after the reference would have stopped, so the data-dependent stop needs no host round trip.
    """
    ov = compute_overlap(target_pose, other_poses, points, chunk_elements)
    device = points.device
    mask = ov.candidate_in_fov
    num_poses = mask.shape[0]
    remaining = torch.ones(mask.shape[1], dtype=torch.bool, device=device)
    forced_in_range = min(num_prev_frames, num_poses)
    if forced_in_range:
        remaining &= ~mask[:forced_in_range].any(0)
    min_points = torch.tensor(mask.shape[1], device=device) * min_overlap
    steps = max(k - num_prev_frames, 0)
    slots = torch.arange(max(k, num_prev_frames), device=device)
    excluded = torch.zeros(num_poses, dtype=torch.bool, device=device)
    excluded[:forced_in_range] = True
    recency = torch.arange(num_poses, 0, -1, device=device) / num_poses * (-RECENCY_WEIGHT)
    kept_mask = mask[ov.kept].to(torch.float32)
    counts = torch.zeros(num_poses, dtype=torch.int64, device=device)
    trace_conf = torch.empty((steps, num_poses), dtype=recency.dtype, device=device)
    trace_rem = torch.empty(steps, dtype=torch.int64, device=device)
    active = torch.ones((), dtype=torch.bool, device=device)
    step_active = torch.empty(steps, dtype=torch.bool, device=device)
    for step in range(steps):
        left = remaining.sum()
        active = active & (left > min_points)
        step_active[step] = active
        trace_rem[step] = left
        # Exact: the counts are integers below 2**24.
        counts[ov.kept] = (kept_mask @ remaining.to(torch.float32)).to(torch.int64)
        confidence = counts / left + recency
        confidence.masked_fill_(excluded, EXCLUDED)
        trace_conf[step] = confidence
        best = torch.topk(confidence, k=1).indices[0]
        slots[num_prev_frames + step] = torch.where(active, best, slots[num_prev_frames + step])
        excluded[best] |= active
        remaining &= ~(mask[best] & active)
    num_selected = num_prev_frames + step_active.sum()
    return Retrieval(slots, num_selected, trace_conf, trace_rem, step_active, ov)
