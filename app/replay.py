"""`--replay`: a recording's actions fed back through the model, every frame checked against the
recorded one; `--view`: a recording's frames (npz or mp4) stepped through in the player window."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app.inference import Tick
from engine.errors import ConfigError
from engine.recordings import read_recording
from engine.recordings.recovery import unfinished

_PART = re.compile(r"^(?P<stem>.+)-part(?P<number>\d+)$")


def _earlier_parts(path: Path, first_frame: int) -> list[Path]:
    """The npz files of parts 1..N-1 of a segment split at its size limit (`S.npz`, `S-part2.npz`, ...)."""
    match = _PART.match(path.with_suffix("").name)
    if first_frame == 0 or match is None:
        return []
    stem = path.with_name(match["stem"])
    return [stem.with_suffix(".npz") if n == 1 else stem.with_name(f"{stem.name}-part{n}.npz")
            for n in range(1, int(match["number"]))]


@dataclass
class ReplayPlan:
    """What to feed the model: `before` re-creates the state the segment started from, then `actions`."""

    path: Path
    metadata: dict[str, Any]
    before: torch.Tensor
    actions: torch.Tensor
    frames: np.ndarray


def load_replay(path: Path) -> ReplayPlan:
    recording = read_recording(path)
    metadata = recording["metadata"]
    before = [torch.tensor(metadata.get("actions_before_segment") or [], dtype=torch.float32)]
    for part in _earlier_parts(Path(path), int(metadata.get("first_frame", 0))):
        if not part.is_file():
            raise ConfigError(unfinished(part.with_suffix("")) or
                              f"{path} continues {part.name}, which is missing: replay needs every earlier part")
        before.append(torch.from_numpy(read_recording(part)["actions"]))
    actions = torch.from_numpy(recording["actions"])
    before = [b.reshape(-1, actions.shape[1]) for b in before]
    return ReplayPlan(Path(path), metadata, torch.cat(before), actions, recording["frames"])


class ReplaySource:
    """Action source for the inference loop plus the frame-by-frame comparison with the recording."""

    def __init__(self, plan: ReplayPlan) -> None:
        self.plan = plan
        self._schedule = torch.cat([plan.before, plan.actions])
        self._lock = threading.Lock()
        self._next = 0
        self._seen = 0
        self.identical = 0
        self.compared = 0
        self.first_mismatch: tuple[int, int] | None = None
        self.episode_ended_at: int | None = None
        self._automatic_reset_due = False

    def next_action(self) -> tuple[torch.Tensor, float] | None:
        with self._lock:
            if self._next >= len(self._schedule) or self.episode_ended_at is not None:
                return None
            self._next += 1
            return self._schedule[self._next - 1], time.perf_counter()

    def on_tick(self, tick: Tick) -> None:
        """Inference thread: compare each replayed frame of the segment with its recorded frame."""
        with self._lock:
            index = self._seen - len(self.plan.before)
            self._seen += 1
            if tick.episode_over:  # the world restarts on its own: where the recorded segment ended too
                self.episode_ended_at, self._automatic_reset_due = index, True
            if index < 0:
                return
            self.compared += 1
            recorded = self.plan.frames[index]
            if np.array_equal(tick.frame, recorded):
                self.identical += 1
            elif self.first_mismatch is None:
                diff = np.abs(tick.frame.astype(np.int16) - recorded.astype(np.int16)).max()
                self.first_mismatch = (index, int(diff))

    def on_reset(self) -> None:
        """A reset asked for restarts the replay; the one that follows an episode's end finishes it."""
        with self._lock:
            if self._automatic_reset_due:
                self._automatic_reset_due = False
                return
            self._next = self._seen = self.identical = self.compared = 0
            self.first_mismatch = self.episode_ended_at = None

    @property
    def total(self) -> int:
        return len(self.plan.actions)

    def position(self) -> str:
        index = self._seen - len(self.plan.before)
        if index < 0:
            return f"catching up {self._seen}/{len(self.plan.before)}"
        ended = "" if self.episode_ended_at is None else ", episode over"
        return f"replay {index}/{self.total}{ended}"

    def summary(self) -> str:
        name = self.plan.path.name
        if self.compared == self.identical:
            cut = "" if self.compared >= self.total else f" (the world ended its episode after frame {self.compared})"
            return f"replay of {name}: {self.identical}/{self.total} frames identical to the recording{cut}"
        index, diff = self.first_mismatch
        return (f"replay of {name}: {self.identical}/{self.compared} frames identical; first difference at "
                f"frame {index} (max |difference| {diff}); same seed, device and dtype as the recording?")


class RecordingViewer:
    """Frames of an npz or mp4 shown at the recording's rate; offers what the player asks of a frame
    source (pause, step, restart). Runs on the window thread: nothing here is slow enough to need one."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(unfinished(self.path.with_suffix("")) or f"recording {self.path} does not exist")
        self.error: BaseException | None = None
        self.finished = False
        self.paused = False
        self.actions: np.ndarray | None = None
        self.poses: np.ndarray | None = None
        self.metadata: dict[str, Any] = {}
        self._steps = 0
        self._latest: Tick | None = None
        self._count = 0
        if self.path.suffix.lower() == ".npz":
            recording = read_recording(self.path)
            self.frames: np.ndarray | None = recording["frames"]
            self.actions, self.poses = recording["actions"], recording["poses"]
            self.metadata = recording["metadata"]
            self.fps = float(self.metadata.get("fps", 20))
            self.total = len(self.frames)
        elif self.path.suffix.lower() == ".mp4":
            self.frames = None
            self._open_mp4()
        else:
            raise ConfigError(f"--view {self.path}: expected a recording .npz or an .mp4")
        self.index = -1
        self._next_time = 0.0
        self._advance()

    def _open_mp4(self) -> None:
        import imageio_ffmpeg

        self._reader = imageio_ffmpeg.read_frames(str(self.path))
        try:
            meta = next(self._reader)
        except (RuntimeError, OSError) as exc:
            raise ConfigError(f"--view {self.path}: ffmpeg cannot read it ({str(exc).splitlines()[0]})") from None
        self._size = meta["size"]
        self.fps = float(meta.get("fps") or 20)
        self.total = round(float(meta.get("duration") or 0) * self.fps)

    def _read(self, index: int) -> np.ndarray | None:
        if self.frames is not None:
            return self.frames[index] if index < len(self.frames) else None
        data = next(self._reader, None)
        if data is None:
            return None
        width, height = self._size
        return np.frombuffer(data, np.uint8).reshape(height, width, 3)

    def _advance(self) -> None:
        frame = self._read(self.index + 1)
        if frame is None:
            self.finished = True
            return
        self.index += 1
        self._count += 1
        now = time.perf_counter()
        action = None if self.actions is None else torch.from_numpy(self.actions[self.index])
        pose = None
        if self.poses is not None and not np.isnan(self.poses[self.index]).any():
            pose = self.poses[self.index]
        self._latest = Tick(frame=frame, action=action, count=self._count, frame_index=self.index,
                            input_time=now, done_time=now, pose=pose)
        self._next_time = max(self._next_time + 1 / self.fps, now)

    def latest(self) -> Tick | None:
        if self._steps or (not self.paused and not self.finished and time.perf_counter() >= self._next_time):
            self._steps = max(0, self._steps - 1)
            self._advance()
        return self._latest

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        self._next_time = time.perf_counter()

    def request_step(self) -> None:
        self._steps += 1

    def request_reset(self) -> None:
        """Back to the first frame."""
        if self.frames is None:
            self._reader.close()
            self._open_mp4()
        self.index = -1
        self.finished = False
        self._next_time = time.perf_counter()
        self._advance()

    def ticks_per_second(self) -> float | None:
        return None if self.paused or self.finished else self.fps

    def position(self) -> str:
        return f"frame {self.index + 1}/{self.total}"

    def stop(self, timeout: float | None = None) -> None:
        if self.frames is None:
            self._reader.close()
