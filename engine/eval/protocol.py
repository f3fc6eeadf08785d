"""The scoring protocol: a world against real recordings, given the same prompt frames and actions.

- Teacher-forced next frame: the world continues after real frames, makes frame t from action t, is scored
  against real frame t, then the real frame replaces its own (`force`) before frame t + 1.
- Open-loop: from a start point s (real frames 0..s as context), the world makes frames s+1 .. s+H from the
  recorded actions alone; frame s+h is scored at horizon h.
- Baselines in the same run: copy-last (the last real frame, for every later frame) and the same world with
  the actions shuffled in time (if that costs nothing, the world ignores its actions).
- Memory (WorldMem, Xiao et al. 2025, Table 1; LoopNav's A->B->A loops): at each revisit (a frame seeing a
  place last seen more than the context window before, `revisits.find_revisits`) the world starts `lead`
  frames before it from the real history and is scored on the frames of the return, with memory on and off.

Worlds are driven through `Scored`, which a session (with `start_from`/`force`) or an oracle provides.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from engine.core.runner import checked_action
from engine.eval.baselines import shuffle_in_time
from engine.eval.metrics import PSNR_CAP_DB, MetricAccumulator, psnr_per_frame, ssim_per_frame
from engine.eval.revisits import find_revisits


class Scored(Protocol):
    """A world as the protocol drives it."""

    context: int  # frames the world conditions on (its context window)

    def bind(self, rec: Recording) -> None:
        """Told which recording is being scored (only oracles use it)."""

    def start_from(self, frames: torch.Tensor, actions: torch.Tensor, poses: torch.Tensor) -> None: ...

    def step(self, action: torch.Tensor) -> torch.Tensor:
        """The next uint8 (H, W, 3) frame."""

    def force(self, frame: torch.Tensor, pose: torch.Tensor) -> None: ...


@dataclass(frozen=True)
class Recording:
    name: str
    frames: torch.Tensor  # (T, H, W, 3) uint8
    actions: torch.Tensor  # (T, A) float32, actions[t] led into frame t
    poses: torch.Tensor  # (T, 5) float32


@dataclass(frozen=True)
class Settings:
    horizons: tuple[int, ...] = (1, 8, 32, 128)
    teacher_forced_frames: int = 200  # per recording
    starts: int = 4  # open-loop start points per recording
    warmup: int = 32  # real frames before the first start point / the first teacher-forced frame
    revisit_gap: int = 32  # a revisit: a place last seen more than this many frames before (>= the context)
    revisit_distance: float = 48.0  # map units
    revisit_yaw: float = 20.0  # degrees
    revisit_lead: int = 8  # open-loop frames before the revisit
    revisit_frames: int = 16  # frames of each return that are scored
    max_revisits: int = 8  # per recording
    seed: int = 0


@dataclass
class Scores:
    psnr: MetricAccumulator = field(default_factory=lambda: MetricAccumulator(cap=PSNR_CAP_DB))
    ssim: MetricAccumulator = field(default_factory=MetricAccumulator)
    videos: list[tuple[str, np.ndarray, np.ndarray]] = field(default_factory=list)  # (what, real, dream)

    def add(self, condition: str, horizon: int, dream: torch.Tensor | np.ndarray, real: torch.Tensor) -> None:
        self.psnr.add(condition, horizon, psnr_per_frame(dream, real))
        self.ssim.add(condition, horizon, ssim_per_frame(dream, real))


TEACHER_FORCED = 0  # the "horizon" key of teacher-forced scores


def teacher_forced_key(condition: str) -> str:
    """Teacher-forced scores are kept apart from the open-loop curves of the same condition."""
    return f"teacher-forced {condition}"


def teacher_forced(world: Scored, rec: Recording, condition: str, scores: Scores, settings: Settings,
                   actions: torch.Tensor | None = None) -> None:
    start = min(settings.warmup, len(rec.frames) - 1)
    stop = min(len(rec.frames), start + settings.teacher_forced_frames)
    actions = rec.actions if actions is None else actions
    world.start_from(rec.frames[:start], rec.actions[:start], rec.poses[:start])
    made = []
    for t in range(start, stop):
        made.append(world.step(actions[t]))
        world.force(rec.frames[t], rec.poses[t])
    if made:
        scores.add(teacher_forced_key(condition), TEACHER_FORCED, torch.stack(made), rec.frames[start:stop])


def copy_last_teacher_forced(rec: Recording, scores: Scores, settings: Settings) -> None:
    start = min(settings.warmup, len(rec.frames) - 1)
    stop = min(len(rec.frames), start + settings.teacher_forced_frames)
    if stop > start:
        scores.add(teacher_forced_key("copy-last"), TEACHER_FORCED, rec.frames[start - 1:stop - 1], rec.frames[start:stop])


def start_points(rec: Recording, settings: Settings, horizon: int) -> list[int]:
    """Evenly spaced start points s with s + horizon inside the recording."""
    last = len(rec.frames) - 1 - horizon
    first = min(settings.warmup, last)
    if last < max(first, 1):
        return []
    return sorted(set(np.linspace(first, last, settings.starts).round().astype(int).tolist()))


def rollout(world: Scored, rec: Recording, start: int, actions: torch.Tensor) -> torch.Tensor:
    """Frames start+1 .. start+len(actions) made open-loop after real frames 0..start."""
    world.start_from(rec.frames[:start + 1], rec.actions[:start + 1], rec.poses[:start + 1])
    return torch.stack([world.step(action) for action in actions])


def open_loop(world: Scored, rec: Recording, condition: str, scores: Scores, settings: Settings,
              shuffle: bool = False, keep_video: bool = False) -> None:
    horizon = max(settings.horizons)
    for k, s in enumerate(start_points(rec, settings, horizon)):
        actions = rec.actions[s + 1:s + 1 + horizon]
        if shuffle:
            actions = shuffle_in_time(actions, settings.seed + k)
        made = rollout(world, rec, s, actions)
        record_horizons(scores, condition, made, rec.frames[s + 1:s + 1 + horizon], settings.horizons)
        if keep_video and k == 0:
            scores.videos.append((f"{rec.name} open loop from frame {s}", rec.frames[s + 1:s + 1 + horizon].numpy(),
                                  made.numpy()))


def record_horizons(scores: Scores, condition: str, made: torch.Tensor | np.ndarray, real: torch.Tensor,
                    horizons: Sequence[int]) -> None:
    """Each frame under its own horizon h (1-based) when h is one of `horizons`, and every frame up to h into
    the `mean@h` figures (the `open-loop mean PSNR over h steps`)."""
    for h in horizons:
        scores.add(condition, h, made[h - 1:h], real[h - 1:h])
        scores.add(f"{condition} mean", h, made[:h], real[:h])


def copy_last_open_loop(rec: Recording, scores: Scores, settings: Settings) -> None:
    horizon = max(settings.horizons)
    for s in start_points(rec, settings, horizon):
        real = rec.frames[s + 1:s + 1 + horizon]
        record_horizons(scores, "copy-last", rec.frames[s].expand_as(real), real, settings.horizons)


def revisits(rec: Recording, settings: Settings, context: int) -> list:
    gap = max(settings.revisit_gap, context + 1)
    found = find_revisits(rec.poses.numpy(), gap - 1, max_distance=settings.revisit_distance,
                          max_yaw_degrees=settings.revisit_yaw)
    return [r for r in found if r.frame - settings.revisit_lead > 0][: settings.max_revisits]


def memory_test(worlds: dict[str, Scored], rec: Recording, scores: Scores, settings: Settings,
                on_revisit: Callable[[int], None] | None = None) -> int:
    """Scores every world (by condition name) on the returns of each revisit; returns the revisits scored."""
    found = revisits(rec, settings, max(world.context for world in worlds.values()))
    for revisit in found:
        start = revisit.frame - settings.revisit_lead - 1
        count = min(len(revisit.frames), settings.revisit_frames)
        steps = settings.revisit_lead + count
        real = rec.frames[revisit.frame:revisit.frame + count]
        for condition, world in worlds.items():
            made = rollout(world, rec, start, rec.actions[start + 1:start + 1 + steps])
            scores.add(condition, 0, made[settings.revisit_lead:], real)
        scores.add("revisit copy-last", 0, rec.frames[start].expand_as(real), real)
        if on_revisit is not None:
            on_revisit(revisit.frame)
    return len(found)


class SessionWorld:
    """A world's session as the protocol drives it (its `start_from` and `force` give it the real context)."""

    def __init__(self, session) -> None:
        self.session = session
        self.context = int(session.context_window)

    def bind(self, rec: Recording) -> None:
        """Worlds see a recording only through start_from, step and force."""

    def start_from(self, frames: torch.Tensor, actions: torch.Tensor, poses: torch.Tensor) -> None:
        self.session.start_from(frames, actions, poses)

    def step(self, action: torch.Tensor) -> torch.Tensor:
        return self.session.step(checked_action(action, self.session)).frame.cpu()

    def force(self, frame: torch.Tensor, pose: torch.Tensor) -> None:
        self.session.force(frame, pose)


class ReplayWorld:
    """An oracle that plays back the recording it is scored on: every frame is the real one (PSNR inf); it
    checks the harness, not a model."""

    context = 1

    def bind(self, rec: Recording) -> None:
        self.rec = rec

    def start_from(self, frames: torch.Tensor, actions: torch.Tensor, poses: torch.Tensor) -> None:
        self.next = len(frames)

    def step(self, action: torch.Tensor) -> torch.Tensor:
        frame = self.rec.frames[min(self.next, len(self.rec.frames) - 1)]
        self.next += 1
        return frame

    def force(self, frame: torch.Tensor, pose: torch.Tensor) -> None:
        """The replayed frame is already the real one."""


class CopyLastWorld:
    """The copy-the-last-frame baseline as a world: it shows the newest real frame it was given, forever."""

    context = 1

    def bind(self, rec: Recording) -> None:
        """Needs nothing of the recording beyond the frames it is given."""

    def start_from(self, frames: torch.Tensor, actions: torch.Tensor, poses: torch.Tensor) -> None:
        self.last = frames[-1]

    def step(self, action: torch.Tensor) -> torch.Tensor:
        return self.last

    def force(self, frame: torch.Tensor, pose: torch.Tensor) -> None:
        self.last = frame


ORACLES = {"replay": ReplayWorld, "copy-last": CopyLastWorld}
