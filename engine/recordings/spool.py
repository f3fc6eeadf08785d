"""The folder `S.spool` of a part being written: what a crash must not lose, finished into `S.npz` + `S.mp4`.

Contents: `metadata.json` (the part's metadata and row layout), `frames.npz.partial` (the npz being written,
frames first, see `npzfile`), one `<name>.rows` file of raw rows per other array, `video.mp4` (ffmpeg's
fragmented output), `encoder.log`, `reserve` (disk space set aside for ffmpeg's last frames) and `lock`
(held by the writing process and its ffmpeg, so recovery waits for both to be gone).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from engine.recordings.format import json_default
from engine.recordings.npzfile import FramesNpz, Member, array_header, claim_space, pwrite_all

LOCK, METADATA, PARTIAL, VIDEO, LOG, RESERVE = (
    "lock", "metadata.json", "frames.npz.partial", "video.mp4", "encoder.log", "reserve")
KNOWN_FILES = {LOCK, METADATA, METADATA + ".tmp", PARTIAL, VIDEO, LOG, RESERVE}  # plus one <name>.rows per array
_STEP = 256 << 10  # disk space is claimed ahead in steps of at least this
_VIDEO_SLACK = 64 << 10
_VIDEO_FRAMES = 32  # ffmpeg holds back this many frames at most (x264 lookahead), kept in `reserve`


def try_lock(folder: Path, wait: float = 0.0) -> int | None:
    """The spool's lock (an open file descriptor), waiting up to `wait` s; None while someone else holds it."""
    path = folder / LOCK
    fd = os.open(path, os.O_RDONLY) if path.exists() else os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(0.05)


class Spool:
    """One part's spool folder: `create` it at the first frame, `append` rows, `finish` it into the npz."""

    def __init__(self, folder: Path, state: dict, lock_fd: int, *, create: bool) -> None:
        self.folder, self.lock_fd = folder, lock_fd
        self.metadata: dict = state["metadata"]
        self.layout = {name: (tuple(shape), np.dtype(dtype)) for name, (shape, dtype) in state["arrays"].items()}
        self._row_bytes = {name: int(np.prod(shape)) * dtype.itemsize for name, (shape, dtype) in self.layout.items()}
        self._metadata_chars = len(json.dumps(self.metadata, default=json_default))
        self._files: dict[str, int] = {}
        self._reserve_fd = -1
        self.npz = FramesNpz(folder / PARTIAL, tuple(state["frame_shape"]), create=create)
        try:
            flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
            for name in self.layout:
                self._files[name] = os.open(folder / f"{name}.rows", flags, 0o644)
            self._reserve_fd = os.open(folder / RESERVE, os.O_RDWR | os.O_CREAT, 0o644)
            self._reserved = os.fstat(self._reserve_fd).st_size
            self.rows = 0
            if not create:
                rows = min(os.fstat(fd).st_size // self._row_bytes[name] for name, fd in self._files.items())
                frames_on_disk = (self.npz.size() - self.npz.data_start) // self.npz.frame_bytes
                self.rows = max(0, min(rows, frames_on_disk))
                self.npz.rescan(self.rows)
        except BaseException:
            self.lock_fd = -1  # the caller's to close
            self.close()
            raise

    @classmethod
    def create(cls, folder: Path, metadata: dict, row: Mapping[str, np.ndarray]) -> Spool:
        """A new spool for a part whose first row is `row` (raises FileExistsError if the folder exists)."""
        folder.mkdir()
        lock_fd = None
        try:
            lock_fd = try_lock(folder, wait=2.0)  # someone probing the new folder holds it for an instant
            if lock_fd is None:
                raise OSError(errno.EBUSY, f"{folder / LOCK} is locked by another process")
            state = {"metadata": metadata, "frame_shape": list(row["frames"].shape),
                     "arrays": {name: [list(np.shape(value)), np.asarray(value).dtype.str]
                                for name, value in row.items() if name != "frames"}}
            tmp = folder / (METADATA + ".tmp")
            tmp.write_text(json.dumps(state, default=json_default))
            os.replace(tmp, folder / METADATA)
            return cls(folder, state, lock_fd, create=True)
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            remove_folder(folder)
            raise

    @classmethod
    def open(cls, folder: Path, lock_fd: int) -> Spool:
        """The spool a killed process left (its lock already taken by the caller)."""
        return cls(folder, json.loads((folder / METADATA).read_text()), lock_fd, create=False)

    def append(self, row: Mapping[str, np.ndarray]) -> None:
        """Write one row: the frame first, then the other arrays; it counts once all of it is written."""
        index, frame = self.rows, row["frames"]
        if index % 16 == 0:
            self._reserve_for_video()
        need = self.npz.data_start + (index + 1) * self.npz.frame_bytes + self._tail_bytes(index + 1)
        if need > self.npz.allocated:
            try:
                self.npz.allocate(need + max(_STEP, 8 * self.npz.frame_bytes))
            except OSError:
                self.npz.allocate(need)  # nearly full: claim only what this frame and the finish need
        self.npz.put(index, frame)
        for name, fd in self._files.items():
            pwrite_all(fd, np.asarray(row[name]).tobytes(), index * self._row_bytes[name])
        self.npz.commit(frame)
        self.rows += 1

    def _tail_bytes(self, rows: int) -> int:
        """What finishing writes after `rows` frames: the other arrays, the metadata (UTF-32) and directory."""
        return (rows * sum(self._row_bytes.values()) + 4 * (self._metadata_chars + 256)
                + 1024 * (len(self._files) + 2) + 4096)

    def _reserve_for_video(self) -> None:
        want = _VIDEO_SLACK + _VIDEO_FRAMES * self.video_bytes() // max(1, self.rows)
        if want > self._reserved and self._reserve_fd >= 0:
            claim_space(self._reserve_fd, self._reserved, want)
            self._reserved = want

    def video_bytes(self) -> int:
        try:
            return (self.folder / VIDEO).stat().st_size
        except OSError:
            return 0

    def release_reserve(self) -> None:
        """Give the space set aside back to the disk, for ffmpeg's last frames and the npz's end."""
        if self._reserve_fd >= 0:
            os.close(self._reserve_fd)
            self._reserve_fd = -1
        (self.folder / RESERVE).unlink(missing_ok=True)

    def finish(self, target: Path, metadata: dict) -> int:
        """Complete the npz with every row written and `metadata`, rename it to `target`; returns the rows."""
        self.release_reserve()
        rows = self.rows
        members = []
        for name, (shape, dtype) in self.layout.items():
            header = array_header(dtype, (rows, *shape))
            members.append(Member(f"{name}.npy", header, len(header) + rows * self._row_bytes[name],
                                  self.folder / f"{name}.rows"))
        text = np.array(json.dumps({**metadata, "num_frames": rows}, default=json_default))
        header = array_header(text.dtype, ())
        members.append(Member("metadata.npy", header, len(header) + text.nbytes, text.tobytes()))
        self.npz.finish(members)
        os.replace(self.npz.path, target)
        return rows

    def close(self) -> None:
        """Close every file (the lock last)."""
        self.npz.close()
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()
        if self._reserve_fd >= 0:
            os.close(self._reserve_fd)
            self._reserve_fd = -1
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1


def remove_folder(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
