"""Vectorised memory retrieval: which stored frames see what the current camera sees.

Reproduces WorldMAR's `get_most_relevant_poses_to_target` (do_optim=True) exactly, quirks included
(fixture README sections 2 and 8): candidates are shifted to target-centred coordinates while the
sample points stay put; the first `num_prev_frames` indices are always returned; the greedy loop runs
while more than `min_overlap · visible` points remain uncovered, scores the remaining-point ratio
plus a recency term that favours later indices, and carves the picked frame's points.

Instead of one atan2-based FOV test per stored pose, visibility of every (camera, point) pair is
decided by the signs of three forms of the camera-relative vector v = (x, y, z), h = √(x² + z²):

* wedge: `x·sin(yaw) + z·cos(yaw) − h·cos 52.5° > 0` (the azimuth is within 52.5° of the yaw);
* band: `y·cos(lo) − h·sin(lo) > 0` and `h·sin(hi) − y·cos(hi) > 0` (elevation between lo and hi,
  the arc of elevations within 37.5° of the pitch, wrapped onto [−90°, 90°]).

Each form is `a·(px, py, pz, 1) + b·h`: the linear parts of all five rows (three forms, x and z) come
from one matrix product per chunk of cameras, then h, three multiply-adds, two minima and a compare.
These are exact rewrites of the angle comparisons; in float32 they differ from the reference's atan2
only for points within rounding (≈1e-6 blocks relative to the coordinates) of an FOV edge, which the
fixtures exclude, and for points exactly on a camera's vertical axis. A cheap bounding-ball test sorts
out cameras that see none or all of the points first, so only the rest are tested point by point.

On CUDA with Triton installed, the per-step overlap counts come from `kernels.fov_overlap` over all
points (no compaction, so no host synchronisation); elsewhere the masks are materialised once and
every greedy step is a matrix-vector product.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from engine.memory.integrator import wrap_degrees
from kernels.fov_overlap import DEFAULT_CHUNK_ELEMENTS, fov_mask_from_forms

FOV_HALF_H = 52.5
FOV_HALF_V = 37.5
RECENCY_WEIGHT = 0.2
EXCLUDED = -1e10
CULL_MARGIN_DEG = 0.01
COS_HALF_H = math.cos(math.radians(FOV_HALF_H))

OUTSIDE, INSIDE, PARTIAL = 0, 1, 2


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


def elevation_band(pitch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Elevations (degrees, float64) whose wrapped distance to `pitch` is below 37.5°, as one interval
    `(lo, hi)` inside [−90°, 90°] per camera; `lo = +inf, hi = −inf` where there is none."""
    pitch = pitch.double()
    centre = wrap_degrees(pitch)
    lo = torch.full_like(pitch, math.inf)
    hi = torch.full_like(pitch, -math.inf)
    # The arc of elevations within 37.5° of pitch meets [-90°, 90°] in at most one interval.
    for shift in (-360.0, 0.0, 360.0):
        c_lo = torch.clamp(centre + shift - FOV_HALF_V, min=-90)
        c_hi = torch.clamp(centre + shift + FOV_HALF_V, max=90)
        hit = c_lo < c_hi
        lo = torch.where(hit, c_lo, lo)
        hi = torch.where(hit, c_hi, hi)
    return lo, hi


def linear_forms(poses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-camera coefficients of the FOV test: `a (P, 5, 4)` over `(px, py, pz, 1)` for the rows
    wedge, low, high, x, z, and `b (P, 3)` multiplying h in wedge, low, high (module docstring).

    Computed in float64 and returned in the poses' dtype. Open band ends (lo = −90°, hi = 90°)
    reduce to `h > 0`; an empty band makes `low` identically 0, i.e. never visible.
    """
    p = poses.double()
    cx, cy, cz = p[:, 0], p[:, 1], p[:, 2]
    yaw = torch.deg2rad(p[:, 4])
    s_yaw, c_yaw = torch.sin(yaw), torch.cos(yaw)
    lo, hi = elevation_band(p[:, 3])
    empty = torch.isinf(lo)
    cos_lo = torch.where((lo <= -90) | empty, 0.0, torch.cos(torch.deg2rad(lo)))
    sin_lo = torch.where(lo <= -90, -1.0, torch.where(empty, 0.0, torch.sin(torch.deg2rad(lo))))
    cos_hi = torch.where(hi >= 90, 0.0, torch.cos(torch.deg2rad(hi)))
    sin_hi = torch.where(hi >= 90, 1.0, torch.sin(torch.deg2rad(hi)))
    zero, one = torch.zeros_like(cx), torch.ones_like(cx)
    a = torch.stack([
        torch.stack([s_yaw, zero, c_yaw, -(s_yaw * cx + c_yaw * cz)], 1),
        torch.stack([zero, cos_lo, zero, -cos_lo * cy], 1),
        torch.stack([zero, -cos_hi, zero, cos_hi * cy], 1),
        torch.stack([one, zero, zero, -cx], 1),
        torch.stack([zero, zero, one, -cz], 1),
    ], 1)
    b = torch.stack([torch.full_like(cx, -COS_HALF_H), -sin_lo, sin_hi], 1)
    return a.to(poses.dtype), b.to(poses.dtype)


def fov_mask(points: torch.Tensor, poses: torch.Tensor, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
             out: torch.Tensor | None = None) -> torch.Tensor:
    """FOV test of `(N, 3)` points for `(P, 5)` cameras at once: `(P, N)` float, 1.0 where visible."""
    return fov_mask_from_forms(points, *linear_forms(poses), chunk_elements, out)


def in_fov(points: torch.Tensor, poses: torch.Tensor, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> torch.Tensor:
    """`fov_mask` as bool `(P, N)`."""
    return fov_mask(points, poses, chunk_elements) > 0


def _circular_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    d = torch.remainder(a - b, 360)
    return torch.minimum(d, 360 - d)


def classify(points: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
    """Per camera `(P,)` int8: OUTSIDE (sees no point), INSIDE (sees every point) or PARTIAL.

    The points lie in a ball (centre s, radius ρ); seen from a camera at distance D > ρ their
    directions stay within asin(ρ/D) of the direction to s, so their elevations stay within that of
    s's elevation, and their azimuths within asin(ρ/D_h). Both verdicts keep `CULL_MARGIN_DEG` (far
    above float32 rounding) from every FOV edge, so they never contradict the point-wise test.
    """
    codes = torch.full((poses.shape[0],), PARTIAL, dtype=torch.int8, device=poses.device)
    if points.shape[0] == 0:
        return codes.fill_(OUTSIDE)
    pts = points.double()
    centre = (pts.amin(0) + pts.amax(0)) / 2
    radius = (pts - centre).norm(dim=1).max()
    d = centre - poses[:, :3].double()
    dist_h = torch.hypot(d[:, 0], d[:, 2])
    dist = torch.hypot(dist_h, d[:, 1])
    ratio_h = torch.clamp(radius / dist_h, max=1)
    spread_h = torch.rad2deg(torch.asin(ratio_h))
    spread = torch.rad2deg(torch.asin(torch.clamp(radius / dist, max=1)))
    off_azimuth = _circular_distance(torch.rad2deg(torch.atan2(d[:, 0], d[:, 2])), poses[:, 4].double())
    off_elevation = _circular_distance(torch.rad2deg(torch.atan2(d[:, 1], dist_h)), poses[:, 3].double())
    clear = dist > radius + CULL_MARGIN_DEG
    outside = clear & (((off_azimuth >= FOV_HALF_H + spread_h + CULL_MARGIN_DEG) & (ratio_h < 1))
                       | (off_elevation >= FOV_HALF_V + spread + CULL_MARGIN_DEG))
    inside = (clear & (ratio_h < 1) & (off_azimuth + spread_h + CULL_MARGIN_DEG <= FOV_HALF_H)
              & (off_elevation + spread + CULL_MARGIN_DEG <= FOV_HALF_V))
    codes[outside] = OUTSIDE
    codes[inside] = INSIDE
    return codes


def target_centred(target_pose: torch.Tensor, other_poses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift candidates by the target position (float32, as the reference) and zero the target's."""
    target = target_pose.clone()
    others = other_poses.clone()
    others[:, :3] -= target[:3]
    target[:3] = 0
    return target, others


class MaskScorer:
    """Candidates' masks over the target-visible points, computed once.

    Only cameras that `classify` finds PARTIAL get a mask row of their own; the others point at a
    shared row of zeros (OUTSIDE) or of ones (INSIDE), the last two rows of `mask`.
    """

    def __init__(self, visible: torch.Tensor, others: torch.Tensor, chunk_elements: int) -> None:
        codes = classify(visible, others)
        partial = (codes == PARTIAL).nonzero().squeeze(1)
        num_partial = len(partial)
        self.mask = torch.empty((num_partial + 2, visible.shape[0]), dtype=visible.dtype, device=visible.device)
        fov_mask(visible, others[partial], chunk_elements, out=self.mask[:num_partial])
        self.mask[num_partial] = 0
        self.mask[num_partial + 1] = 1
        self.position = torch.where(codes == INSIDE, num_partial + 1, num_partial).to(torch.int64)
        self.position[partial] = torch.arange(num_partial, device=visible.device)

    def counts(self, weights: torch.Tensor) -> torch.Tensor:
        """`(P,)` int64 number of weighted (0/1) points each candidate sees; exact (integers < 2**24)."""
        return (self.mask @ weights)[self.position].to(torch.int64)

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """`(len(index), V)` float masks of the candidates `index`."""
        return self.mask[self.position[index]]


class KernelScorer:
    """Candidates scored over all points by the Triton kernel, weighted by the target's mask: nothing
    is compacted, so no step waits for the host."""

    def __init__(self, points: torch.Tensor, others: torch.Tensor) -> None:
        from kernels.fov_overlap import fov_overlap_counts

        self._count = fov_overlap_counts
        self.points = points
        self.a, self.b = linear_forms(others)

    def counts(self, weights: torch.Tensor) -> torch.Tensor:
        return self._count(self.points, self.a, self.b, weights).to(torch.int64)

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        return fov_mask_from_forms(self.points, self.a[index], self.b[index])


@dataclass
class Overlap:
    """Per-candidate view overlap with the target, before any greedy carving."""

    target_in_fov: torch.Tensor  # (N,) bool over all points
    scorer: MaskScorer | KernelScorer
    weights: torch.Tensor  # (V,) ones over the visible points (mask scorer) or the target mask (kernel)
    num_poses: int

    @property
    def count(self) -> torch.Tensor:
        """`(P,)` int64 number of target-visible points each candidate sees."""
        return self.scorer.counts(self.weights)

    @property
    def ratio(self) -> torch.Tensor:
        """`(P,)` float32 `count / target-visible count`, as the reference divides."""
        return self.count / self.target_in_fov.sum()

    @property
    def candidate_in_fov(self) -> torch.Tensor:
        """`(P, V)` bool FOV masks over the target-visible points (built on demand)."""
        rows = self.scorer.rows(torch.arange(self.num_poses, device=self.weights.device))
        if isinstance(self.scorer, KernelScorer):
            rows = rows[:, self.target_in_fov]
        return rows > 0


BACKENDS = ("auto", "torch", "triton")


def use_kernel(points: torch.Tensor, backend: str) -> bool:
    """Whether `backend` resolves to the Triton kernel for these points: 'auto' takes it for CUDA
    tensors when Triton is installed, 'triton' insists (CPU tensors only under TRITON_INTERPRET=1)."""
    if backend not in BACKENDS:
        raise ValueError(f"retrieval backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "torch":
        return False
    from kernels.fov_overlap import kernel_runs_on

    ok = kernel_runs_on(points.device)
    if backend == "triton" and not ok:
        raise RuntimeError("the Triton FOV kernel needs the triton package and CUDA tensors "
                           "(or TRITON_INTERPRET=1 for CPU tensors)")
    return ok and (backend == "triton" or points.is_cuda)


def compute_overlap(target_pose: torch.Tensor, other_poses: torch.Tensor, points: torch.Tensor,
                    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS, backend: str = "auto") -> Overlap:
    """FOV masks of every candidate over the target-visible points (points are already target-centred);
    counts and ratios are computed when asked for.

    The torch path sizes the visible and partially visible subsets on the host (two syncs); the
    kernel path has none.
    """
    target, others = target_centred(target_pose, other_poses)
    target_mask = in_fov(points, target[None], chunk_elements)[0]
    if use_kernel(points, backend):
        scorer = KernelScorer(points, others)
        weights = target_mask.to(points.dtype)
    else:
        visible = points[target_mask]
        scorer = MaskScorer(visible, others, chunk_elements)
        weights = visible.new_ones(visible.shape[0])
    return Overlap(target_mask, scorer, weights, others.shape[0])


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
             min_overlap: float = 0.05, k: int = 3, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
             backend: str = "auto") -> Retrieval:
    """Pick up to k stored frames whose view overlaps the target's, exactly as WorldMAR does.

    The greedy loop always runs its `k − num_prev_frames` steps on the device and masks the steps
    after the reference would have stopped, so the data-dependent stop needs no host round trip.
    """
    ov = compute_overlap(target_pose, other_poses, points, chunk_elements, backend)
    scorer, device = ov.scorer, points.device
    num_poses = other_poses.shape[0]
    remaining = ov.weights.clone()
    forced_in_range = min(num_prev_frames, num_poses)
    if forced_in_range:
        covered = scorer.rows(torch.arange(forced_in_range, device=device)).amax(0)
        remaining.mul_(1 - covered)
    min_points = ov.target_in_fov.sum() * min_overlap
    steps = max(k - num_prev_frames, 0)
    slots = torch.arange(max(k, num_prev_frames), device=device)
    excluded = torch.zeros(num_poses, dtype=torch.bool, device=device)
    excluded[:forced_in_range] = True
    recency = torch.arange(num_poses, 0, -1, device=device) / num_poses * (-RECENCY_WEIGHT)
    trace_conf = torch.empty((steps, num_poses), dtype=recency.dtype, device=device)
    trace_rem = torch.empty(steps, dtype=torch.int64, device=device)
    active = torch.ones((), dtype=torch.bool, device=device)
    step_active = torch.empty(steps, dtype=torch.bool, device=device)
    for step in range(steps):
        left = remaining.sum().to(torch.int64)  # exact: a sum of fewer than 2**24 ones
        active = active & (left > min_points)
        step_active[step] = active
        trace_rem[step] = left
        confidence = scorer.counts(remaining) / left + recency
        confidence.masked_fill_(excluded, EXCLUDED)
        trace_conf[step] = confidence
        best = torch.topk(confidence, k=1).indices
        slots[num_prev_frames + step] = torch.where(active, best[0], slots[num_prev_frames + step])
        excluded[best] |= active
        remaining.mul_(1 - scorer.rows(best)[0] * active)
    num_selected = num_prev_frames + step_active.sum()
    return Retrieval(slots, num_selected, trace_conf, trace_rem, step_active, ov)
