"""One training episode (a VPT demo or a project recording) in the engine's per-frame conventions.

`actions[t]` is the action that conditions frame t, i.e. the one taken after frame t-1; the same holds
for `rewards[t]` and `ends[t]` (the transition into frame t). Frames are read on demand through a
`FrameSource`, so an episode costs only its metadata until a dataset asks for pixels.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from engine.errors import ConfigError

POSE_DIM = 5


class FrameSource(Protocol):
    """Random and sequential access to an episode's RGB frames, uint8 (n, H, W, 3)."""

    num_frames: int
    size: tuple[int, int]

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at `indices` (any order, repeats allowed), in that order."""

    def iter_chunks(self, start: int, stop: int, chunk: int) -> Iterator[np.ndarray]:
        """Frames start..stop-1 in consecutive chunks of at most `chunk` frames."""


class ArrayFrames:
    """Frames held in memory (a recording's `frames` array)."""

    def __init__(self, frames: np.ndarray) -> None:
        self.frames = frames
        self.num_frames = len(frames)
        self.size = (int(frames.shape[1]), int(frames.shape[2]))

    def read(self, indices: Sequence[int]) -> np.ndarray:
        return self.frames[np.asarray(indices, dtype=np.int64)]

    def iter_chunks(self, start: int, stop: int, chunk: int) -> Iterator[np.ndarray]:
        for first in range(start, stop, chunk):
            yield self.frames[first:min(first + chunk, stop)]


@dataclass
class Episode:
    """Per-frame arrays of one episode; every tensor has the episode's T rows."""

    name: str
    actions: torch.Tensor  # (T, A) float32: actions[t] conditions frame t
    poses: torch.Tensor  # (T, 5) float32: x, y, z, pitch, yaw; NaN where unknown
    frames: FrameSource | None = None
    rewards: torch.Tensor | None = None  # (T,) float32: reward of the transition into frame t
    ends: torch.Tensor | None = None  # (T,) bool: the transition into frame t ended the episode
    gui_open: torch.Tensor | None = None  # (T,) bool: a GUI (inventory, chat) covers frame t
    fps: float = 20.0
    source: str = ""
    depth: FrameSource | None = None  # (T, H, W) uint8 levels of the game's depth buffer (info["depth_units"])
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        count = len(self.actions)
        if self.rewards is None:
            self.rewards = torch.zeros(count, dtype=torch.float32)
        if self.ends is None:
            self.ends = torch.zeros(count, dtype=torch.bool)
        if self.gui_open is None:
            self.gui_open = torch.zeros(count, dtype=torch.bool)
        for key in ("poses", "rewards", "ends", "gui_open"):
            if len(getattr(self, key)) != count:
                raise ConfigError(f"episode {self.source or self.name}: '{key}' has {len(getattr(self, key))} rows, "
                                  f"expected {count} (one per frame)")
        if self.poses.shape[1:] != (POSE_DIM,):
            raise ConfigError(f"episode {self.source or self.name}: poses have shape {tuple(self.poses.shape)}, "
                              f"expected ({count}, {POSE_DIM})")

    @property
    def num_frames(self) -> int:
        return len(self.actions)

    def require_frames(self) -> FrameSource:
        if self.frames is None:
            raise ConfigError(f"episode {self.source or self.name} has no video: put its .mp4 beside the .jsonl "
                              "or train from a latent cache")
        return self.frames


def to_model_frames(frames: np.ndarray, size: tuple[int, int] | None = None) -> torch.Tensor:
    """uint8 (n, H, W, 3) -> float32 (n, 3, h, w) in [-1, 1], resized (bilinear, antialiased) to `size`."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255)
    if size is not None and tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="bilinear", antialias=True, align_corners=False).clamp_(0, 1)
    return x.mul_(2).sub_(1)
