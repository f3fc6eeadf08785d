"""Revisits in a pose trajectory: frames that see a place last seen more than the context window before.

This is the memory test of WorldMem (Xiao et al. 2025, Table 1: PSNR on frames beyond the context window)
and of LoopNav's A->B->A loops: a world without memory can only guess such a frame, one with memory can
recall it. The harness scores the frames of each return with memory on and off.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.errors import ConfigError, EngineError

# Frames per block of the pairwise comparison (a block's rows x T floats stay in cache).
_BLOCK = 64


@dataclass(frozen=True)
class Revisit:
    """Frame `frame` sees the place of frame `earlier`, which no frame in between saw.

    The return goes on to `stop` (exclusive): consecutive frames from `frame` on that each see a place also
    seen more than the context window before them.
    """

    frame: int
    earlier: int
    stop: int

    @property
    def frames(self) -> range:
        """Every frame of this return, to be scored."""
        return range(self.frame, self.stop)

    @property
    def gap(self) -> int:
        return self.frame - self.earlier


def find_revisits(poses: np.ndarray | torch.Tensor, context: int, *, max_distance: float,
                  max_yaw_degrees: float, min_gap: int | None = None) -> list[Revisit]:
    """One `Revisit` per return to a place last seen more than `context` frames before, in time order.

    Poses (T, 5) are (x, y, z, pitch, yaw) with y up. Frames s and t see the same place when their positions
    are within `max_distance` (3-D distance, so x-z and height) and their yaws within `max_yaw_degrees`
    (wrapped, so 359 and 1 are 2 apart); pitch is not compared; at exactly a tolerance float rounding
    decides. A frame whose x, y, z or yaw is NaN is never close to any.

    A return is a maximal run of frames that each see a place also seen at least `min_gap` frames before them
    (default `context` + 1: outside a window of `context` frames ending at the frame before). It counts when,
    between the last such sighting of its first frame's place and that frame, the player was elsewhere (some
    frame does not see that place): coming back, not standing still. Walking continuously, the frames just
    before a return see nearly the same place, so they do not disqualify it.
    """
    gap = context + 1 if min_gap is None else int(min_gap)
    if context < 0:
        raise ConfigError(f"find_revisits: context must be >= 0, got {context}")
    if gap <= context:
        raise ConfigError(f"find_revisits: min_gap {gap} must exceed the context of {context} frames")
    if max_distance < 0 or max_yaw_degrees < 0:
        raise ConfigError(f"find_revisits: max_distance ({max_distance}) and max_yaw_degrees "
                          f"({max_yaw_degrees}) must be >= 0")
    p = poses.detach().cpu().double().numpy() if isinstance(poses, torch.Tensor) else np.asarray(poses, np.float64)
    if p.ndim != 2 or p.shape[1] != 5:
        raise EngineError(f"find_revisits: poses must be (T, 5) (x, y, z, pitch, yaw), got {p.shape}")
    if len(p) == 0:
        return []
    places = _Places(p, max_distance, max_yaw_degrees)
    has_old = places.sightings(gap)
    revisits = []
    for lo, hi in _runs(has_old):
        earlier = places.last_sighting(lo, gap)
        # a return, not a long stay: some frame between the earlier sighting and `lo` is elsewhere
        if not places.close(slice(lo, lo + 1), slice(earlier + 1, lo))[0].all():
            revisits.append(Revisit(frame=lo, earlier=earlier, stop=hi))
    return revisits


class _Places:
    """Pairwise 'sees the same place' tests over a trajectory, in blocks of consecutive frames.

    Each frame is a point in two spaces: position (x, y, z) and view direction (cos yaw, sin yaw), where
    yaws within m degrees are unit vectors within a chord of 2 sin(m / 2). A block pair whose bounding
    boxes are out of reach in either space is skipped: a trajectory is continuous, so most blocks are far
    from most others. numpy, single-threaded: it stays fast on a machine shared with other work.
    """

    def __init__(self, poses: np.ndarray, max_distance: float, max_yaw_degrees: float) -> None:
        valid = np.isfinite(poses[:, [0, 1, 2, 4]]).all(axis=1)
        origin = poses[valid, :3][0] if valid.any() else np.zeros(3)
        yaw = np.radians(poses[:, 4])
        # centred positions, so float32 differences keep their precision
        feats = np.concatenate([poses[:, :3] - origin, np.cos(yaw)[:, None], np.sin(yaw)[:, None]], axis=1)
        self.n = len(poses)
        chord2 = (2.0 * np.sin(np.radians(max_yaw_degrees) / 2.0)) ** 2 if max_yaw_degrees < 180 else np.inf
        self.groups = ((slice(0, 3), float(max_distance) ** 2), (slice(3, 5), float(chord2)))
        self.near_blocks = self._near_blocks(feats, valid)
        feats[~valid] = np.nan  # NaN compares false: an invalid frame is close to nothing
        self.axes = np.ascontiguousarray(feats.T, dtype=np.float32)

    def _near_blocks(self, feats: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """(K, K) bool over blocks of _BLOCK frames: may some frame of block i see the place of one of block j?"""
        k = -(-self.n // _BLOCK)
        ok = np.pad(valid, (0, k * _BLOCK - self.n))[:, None]
        padded = np.pad(np.nan_to_num(feats), ((0, k * _BLOCK - self.n), (0, 0)))
        lo = np.where(ok, padded, np.inf).reshape(k, _BLOCK, -1).min(axis=1)
        hi = np.where(ok, padded, -np.inf).reshape(k, _BLOCK, -1).max(axis=1)
        sep = np.maximum(0.0, np.maximum(lo[:, None] - hi[None], lo[None] - hi[:, None])) ** 2
        near = np.ones((k, k), dtype=bool)
        for axes, limit in self.groups:
            near &= sep[:, :, axes].sum(axis=2) <= limit
        return near

    def close(self, rows: slice, cols: slice | np.ndarray) -> np.ndarray:
        """(rows, cols) bool: frame pairs within the distance and yaw tolerances."""
        near = None
        for axes, limit in self.groups:
            d2 = None
            for axis in self.axes[axes]:
                diff = np.square(axis[rows, None] - axis[cols][None])
                d2 = diff if d2 is None else np.add(d2, diff, out=d2)
            near = d2 <= limit if near is None else np.logical_and(near, d2 <= limit, out=near)
        return near

    def sightings(self, gap: int) -> np.ndarray:
        """Per frame t: is its place seen by a frame s <= t - gap?"""
        has_old = np.zeros(self.n, dtype=bool)
        for k, a in enumerate(range(0, self.n, _BLOCK)):
            b = min(self.n, a + _BLOCK)
            split = max(0, a - gap + 1)  # columns below `split` are old for every row of the block
            blocks = np.flatnonzero(self.near_blocks[k, : -(-split // _BLOCK)])
            if blocks.size:
                cols = (blocks[:, None] * _BLOCK + np.arange(_BLOCK)).ravel()
                has_old[a:b] = self.close(slice(a, b), cols[cols < split]).any(axis=1)
            band = self.close(slice(a, b), slice(split, b))
            lag = np.arange(a, b)[:, None] - np.arange(split, b)[None, :]
            has_old[a:b] |= (band & (lag >= gap)).any(axis=1)
        return has_old

    def last_sighting(self, t: int, gap: int) -> int:
        """The last frame s <= t - gap that sees frame t's place (one exists when called)."""
        return int(np.flatnonzero(self.close(slice(t, t + 1), slice(0, t - gap + 1))[0])[-1])


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[lo, hi) of each maximal run of True in a 1-D bool array."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))
