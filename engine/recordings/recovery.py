"""Finishing a part: the spool becomes `S.npz` + `S.mp4`, at close or after a crash (`recover_segment`)."""

from __future__ import annotations

import json
import os
import zipfile
from contextlib import suppress
from itertools import chain
from pathlib import Path

from engine.errors import ConfigError
from engine.recordings.encoder import Encoder
from engine.recordings.format import RecordingError, with_suffix, write_failure
from engine.recordings.npzfile import frames_and_metadata, iter_frames
from engine.recordings.spool import KNOWN_FILES, LOG, PARTIAL, VIDEO, Spool, remove_folder, try_lock


def recover_command(stem: Path) -> str:
    return f"python -m engine.recordings recover {stem}"


def spool_in_the_way(stem: Path) -> RecordingError:
    return RecordingError(f"{with_suffix(stem, '.spool')} is in the way (an unfinished recording): recover it "
                          f"with `{recover_command(stem)}` or delete it")


def unfinished(stem: Path) -> str | None:
    """Why the segment `stem` cannot be read yet (its spool is still there), or None."""
    spool = with_suffix(stem, ".spool")
    if not spool.is_dir():
        return None
    try:
        fd = try_lock(spool, wait=1.0)  # the ffmpeg of a killed recording needs a moment to finish its file
    except OSError:
        fd = -1
    if fd is None:
        return f"recording {stem} is still being written ({spool.name} is in use)"
    if fd >= 0:
        os.close(fd)
    return f"recording {stem} was not finalised (was the program killed?): rebuild it with `{recover_command(stem)}`"


def complete_part(stem: Path, spool: Spool | None, *, encoder_ok: bool, crf: int, preset: str,
                  recovered: bool = False) -> int:
    """Turn the spool of part `stem` into `stem.npz` + `stem.mp4`; returns the frames kept (0: nothing left).

    The npz gets every row the spool holds; the mp4 is re-encoded from the npz unless the encoder is known
    to have finished with all of them (`encoder_ok`) or holds exactly as many frames. Safe to repeat after
    a crash at any step.
    """
    folder, npz, mp4 = with_suffix(stem, ".spool"), with_suffix(stem, ".npz"), with_suffix(stem, ".mp4")
    if spool is not None:
        metadata = {**spool.metadata, "recovered": recovered}
        if spool.rows == 0:
            spool.close()
            remove_folder(folder)
            return 0
        frames = spool.finish(npz, metadata)
    elif npz.is_file():  # the npz was renamed into place before the crash
        frames, text = frames_and_metadata(npz)
        metadata = json.loads(text)
    else:
        remove_folder(folder)
        return 0
    video = folder / VIDEO if (folder / VIDEO).exists() else mp4
    if not encoder_ok and mp4_frames(video) != frames:
        reencode(npz, video, float(metadata.get("fps", 20)), crf, preset, folder / LOG)
    if video != mp4:
        os.replace(video, mp4)
    if spool is not None:
        spool.close()
    remove_folder(folder)
    return frames


def recover_segment(stem: str | Path, *, crf: int = 18, preset: str = "veryfast", wait: float = 30.0) -> Path:
    """Finish a segment a killed process left unfinalised; returns the npz path.

    Every frame the spool holds is kept in the npz; the mp4 is kept if it holds the same frames, else
    re-encoded from the npz. Waits up to `wait` s for the recording's ffmpeg to finish its file. A
    segment that is already complete is left as it is.
    """
    stem = Path(stem)
    stem = stem.with_suffix("") if stem.suffix.lower() in (".mp4", ".npz", ".spool") else stem
    folder, npz = with_suffix(stem, ".spool"), with_suffix(stem, ".npz")
    if not folder.is_dir():
        if npz.is_file():
            return npz
        raise ConfigError(f"recording {stem}: neither {npz.name} nor {folder.name} exists")
    try:
        lock_fd = try_lock(folder, wait)
    except OSError as exc:
        raise RecordingError(f"cannot recover {stem} ({write_failure(exc)})") from None
    if lock_fd is None:
        raise ConfigError(f"recording {stem} is still being written by a running process ({folder.name} is "
                          f"locked); stop it first")
    strange = sorted(p.name for p in folder.iterdir() if p.name not in KNOWN_FILES and not p.name.endswith(".rows"))
    if strange:
        os.close(lock_fd)
        raise ConfigError(f"recording {stem}: {folder.name} holds files this version does not write "
                          f"({', '.join(strange[:3])}); it was left as it is")
    spool = None
    try:
        if (folder / PARTIAL).exists():
            spool = Spool.open(folder, lock_fd)
            lock_fd = -1
        frames = complete_part(stem, spool, encoder_ok=False, crf=crf, preset=preset, recovered=True)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise RecordingError(f"cannot recover {stem} ({write_failure(exc)}); after fixing that, run "
                             f"`{recover_command(stem)}` again") from None
    finally:
        if spool is not None:
            spool.close()
        if lock_fd >= 0:
            os.close(lock_fd)
    if frames == 0:
        raise ConfigError(f"recording {stem}: no frame was written before the program stopped; "
                          f"removed the empty {folder.name}")
    return npz


def mp4_frames(path: Path) -> int | None:
    """Frames ffmpeg can decode from `path` (None if it cannot read it at all)."""
    import imageio_ffmpeg

    if not path.is_file():
        return None
    try:
        return imageio_ffmpeg.count_frames_and_secs(str(path))[0]
    except (RuntimeError, OSError, ValueError):
        return None


def reencode(npz: Path, mp4: Path, fps: float, crf: int, preset: str, log: Path) -> None:
    """Encode `mp4` anew from the frames of `npz` (streamed, one frame in memory)."""
    frames = iter_frames(npz)
    first = next(frames)
    mp4.unlink(missing_ok=True)  # its space is needed for the new file
    encoder = Encoder(mp4, first.shape[0], first.shape[1], fps, crf, preset, log)
    try:
        for frame in chain((first,), frames):
            encoder.write(frame)
    except BaseException:
        with suppress(OSError):
            encoder.close()
        raise
    encoder.close()
