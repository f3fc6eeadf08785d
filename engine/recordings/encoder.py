"""The H.264 encoder of a recording: an ffmpeg process (the binary imageio-ffmpeg ships) fed raw RGB frames."""

from __future__ import annotations

import collections
import errno
import subprocess
import threading
from contextlib import suppress
from fractions import Fraction
from pathlib import Path

import numpy as np

from engine.recordings.format import describe


class Encoder:
    """An ffmpeg process fed raw RGB frames on stdin (its own session, so Ctrl+C in a terminal reaches
    only the player, which then closes the pipe and lets ffmpeg finish the file)."""

    def __init__(self, path: Path, height: int, width: int, fps: float, crf: int, preset: str) -> None:
        import imageio_ffmpeg

        pad = ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"] if height % 2 or width % 2 else []
        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
               "-r", str(Fraction(fps).limit_denominator(1001)), "-i", "-", "-an",
               "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p", *pad, str(path)]
        self.path = path
        self._log: collections.deque[str] = collections.deque(maxlen=8)
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      start_new_session=True)
        self._drain = threading.Thread(target=self._read_log, daemon=True)
        self._drain.start()

    def _read_log(self) -> None:
        for line in iter(self._proc.stderr.readline, b""):
            if line.strip():
                self._log.append(line.decode(errors="replace").strip())

    def _failure(self, what: str) -> OSError:
        self._drain.join(timeout=5)
        detail = self._log[-1] if self._log else what
        code = errno.ENOSPC if any("No space left" in line for line in self._log) else errno.EIO
        return OSError(code, f"ffmpeg could not write {self.path}: {detail}")

    def write(self, frame: np.ndarray) -> None:
        try:
            self._proc.stdin.write(frame.data)
        except (BrokenPipeError, ValueError, OSError) as exc:
            self._proc.wait()
            raise self._failure(describe(exc)) from None

    def close(self) -> None:
        with suppress(OSError):
            self._proc.stdin.close()
        code = self._proc.wait()
        self._drain.join(timeout=5)
        if code != 0:
            raise self._failure(f"exit status {code}")
