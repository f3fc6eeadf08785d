"""The recording format's names and the small helpers every part of it shares (see `engine.recordings`)."""

from __future__ import annotations

import errno
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.errors import EngineError

FORMAT_NAME = "neural-game-engine/recording"
FORMAT_VERSION = 1
POSE_DIM = 5
BASE_KEYS = ("frames", "actions", "poses", "timestamps")
RESERVED_KEYS = (*BASE_KEYS, "metadata")


class RecordingError(EngineError):
    """A recording could not be written completely (disk full, ffmpeg failure)."""


def segment_stem(root: str | Path, world: str, when: datetime | None = None) -> Path:
    """`root/<world>/<YYYYmmdd-HHMMSS>`, with `-2`, `-3`... appended if that segment already exists."""
    base = Path(root) / world / (when or datetime.now()).strftime("%Y%m%d-%H%M%S")
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


def disk_full(exc: BaseException) -> bool:
    return getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in str(exc)


def to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)
