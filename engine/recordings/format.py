"""The recording format's names and the small helpers every part of it shares (see `engine.recordings`)."""

from __future__ import annotations

import errno
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import EngineError

FORMAT_NAME = "neural-game-engine/recording"
FORMAT_VERSION = 1
POSE_DIM = 5
BASE_KEYS = ("frames", "actions", "poses", "timestamps")
RESERVED_KEYS = (*BASE_KEYS, "metadata")


class RecordingError(EngineError):
    """A recording could not be written completely (disk full, ffmpeg failure)."""


def check_world_name(world: str) -> str:
    """`world` if it can name a folder of recordings: one path component, no `..`, no separators."""
    if (not world or world in (".", "..") or world.startswith(".") or any(c in world for c in "/\\\0:")
            or not world.isprintable()):
        raise RecordingError(f"world name {world!r} cannot name a recordings folder: use one plain file name "
                             f"(letters, digits, '-', '_'; no '/', '\\' or leading '.')")
    return world


def segment_stem(root: str | Path, world: str, when: datetime | None = None) -> Path:
    """`root/<world>/<YYYYmmdd-HHMMSS>`, with `-2`, `-3`... appended if that segment already exists."""
    base = Path(root) / check_world_name(world) / (when or datetime.now()).strftime("%Y%m%d-%H%M%S")
    stem, n = base, 1
    while any(with_suffix(stem, s).exists() for s in (".mp4", ".npz", ".spool")):
        n += 1
        stem = base.with_name(f"{base.name}-{n}")
    return stem


def with_suffix(stem: Path, suffix: str) -> Path:
    return stem.with_name(stem.name + suffix)


def part_stem(stem: Path, part: int) -> Path:
    return stem if part == 1 else stem.with_name(f"{stem.name}-part{part}")


def json_default(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") else str(value)


def describe(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def write_failure(exc: BaseException) -> str:
    """Why a write failed, in a few words: "disk full", "file size limit reached" or the error itself."""
    code = getattr(exc, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(exc):
        return "disk full"
    if code == errno.EFBIG:
        return "file size limit reached"
    return describe(exc)


def to_numpy(value: Any) -> np.ndarray:
    """An array (a torch tensor is copied to the host: recordings need no torch import of their own)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu().numpy()
    return np.asarray(value)
