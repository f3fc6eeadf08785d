"""Finishing a segment that a crashed process left unfinalised."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from engine.errors import ConfigError
from engine.recordings.encoder import Encoder
from engine.recordings.format import describe, with_suffix
from engine.recordings.spool import assemble_npz, spool_chunks


def recover_segment(stem: str | Path, *, crf: int = 18, preset: str = "veryfast") -> Path:
    """Finish a segment a crashed process left unfinalised: npz from the spool, mp4 re-encoded if needed.

    Returns the npz path. A segment that is already complete is left as it is.
    """
    stem = Path(stem)
    stem = stem.with_suffix("") if stem.suffix.lower() in (".mp4", ".npz", ".spool") else stem
    spool, npz, mp4 = with_suffix(stem, ".spool"), with_suffix(stem, ".npz"), with_suffix(stem, ".mp4")
    if not spool.is_dir():
        if npz.is_file():
            return npz
        raise ConfigError(f"recording {stem}: neither {npz.name} nor {spool.name} exists")
    try:
        metadata = json.loads((spool / "metadata.json").read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"recording {stem}: {spool}/metadata.json is unreadable ({describe(exc)})") from None
    metadata["recovered"] = True
    frames = assemble_npz(npz, spool_chunks(spool), None, metadata)
    if frames == 0:
        raise ConfigError(f"recording {stem}: the spool holds no complete chunk; nothing to recover")
    if mp4_frames(mp4) != frames:
        reencode(npz, mp4, float(metadata.get("fps", 20)), crf, preset)
    shutil.rmtree(spool, ignore_errors=True)
    return npz


def mp4_frames(path: Path) -> int | None:
    import imageio_ffmpeg

    if not path.is_file():
        return None
    try:
        return imageio_ffmpeg.count_frames_and_secs(str(path))[0]
    except (RuntimeError, OSError, ValueError):
        return None


def reencode(npz: Path, mp4: Path, fps: float, crf: int, preset: str) -> None:
    with np.load(npz, allow_pickle=False) as data:
        frames = data["frames"]
        encoder = Encoder(mp4, frames.shape[1], frames.shape[2], fps, crf, preset)
        for frame in frames:
            encoder.write(np.ascontiguousarray(frame))
        encoder.close()
