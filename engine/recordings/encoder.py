"""The H.264 encoder of a recording: an ffmpeg process (the binary imageio-ffmpeg ships) fed raw RGB frames."""

from __future__ import annotations

import errno
import os
import subprocess
from contextlib import suppress
from fractions import Fraction
from pathlib import Path

import numpy as np

from engine.recordings.format import describe

# Fragmented mp4 flushed packet by packet: a file cut short anywhere but in a fragment header still plays.
FRAGMENTED = ["-movflags", "+frag_every_frame+empty_moov+default_base_moof", "-flush_packets", "1"]
_ERRORS = {"No space left": errno.ENOSPC, "File too large": errno.EFBIG, "Disk quota exceeded": errno.EDQUOT}


class Encoder:
    """An ffmpeg process fed raw RGB frames on stdin. It runs in its own session, so Ctrl+C in a terminal
    reaches only the player, and it outlives a killed player: its stdin closes and it finishes the file.
    Its messages go to `log`; `lock_fd` (an open, locked file) is inherited so the lock lasts as long as it."""

    def __init__(self, path: Path, height: int, width: int, fps: float, crf: int, preset: str, log: Path,
                 lock_fd: int | None = None) -> None:
        import imageio_ffmpeg

        pad = ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"] if height % 2 or width % 2 else []
        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
               "-r", str(Fraction(fps).limit_denominator(1001)), "-i", "-", "-an",
               "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p", *pad,
               *FRAGMENTED, str(path)]
        self.path, self.log = path, log
        with open(log, "ab") as messages:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=messages,
                                          start_new_session=True, bufsize=0,
                                          pass_fds=() if lock_fd is None else (lock_fd,))

    def _failure(self, what: str) -> OSError:
        try:
            lines = [line.strip() for line in self.log.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            lines = []
        detail = lines[-1] if lines else what
        code = next((code for text, code in _ERRORS.items() if any(text in line for line in lines)), errno.EIO)
        return OSError(code, f"ffmpeg could not write {self.path}: {detail}")

    def write(self, frame: np.ndarray) -> None:
        view = memoryview(frame).cast("B")
        try:
            while view:
                view = view[os.write(self._proc.stdin.fileno(), view):]
        except (BrokenPipeError, ValueError, OSError) as exc:
            self._proc.wait()
            raise self._failure(describe(exc)) from None

    def close(self) -> None:
        with suppress(OSError):
            self._proc.stdin.close()
        code = self._proc.wait()
        if code != 0:
            raise self._failure(f"exit status {code}")
