"""`SegmentWriter`: one recording segment (possibly in parts) written from a background thread."""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.recordings.encoder import Encoder
from engine.recordings.format import (
    BASE_KEYS,
    FORMAT_NAME,
    FORMAT_VERSION,
    POSE_DIM,
    RESERVED_KEYS,
    RecordingError,
    check_world_name,
    part_stem,
    segment_stem,
    to_numpy,
    with_suffix,
    write_failure,
)
from engine.recordings.recovery import complete_part, recover_command, spool_in_the_way
from engine.recordings.spool import LOG, VIDEO, Spool, remove_folder

if TYPE_CHECKING:
    import torch

_CLOSE = object()
_POLL_S = 0.1  # waits between threads re-check their condition this often (see _drain and close)


class _Part:
    """One mp4 + npz pair being written: its spool folder and its encoder."""

    def __init__(self, stem: Path, number: int, first_frame: int, metadata: dict, row: dict[str, np.ndarray],
                 fps: float, crf: int, preset: str) -> None:
        self.stem = stem
        self.metadata = {**metadata, "part": number, "first_frame": first_frame}
        folder = with_suffix(stem, ".spool")
        try:
            self.spool = Spool.create(folder, self.metadata, row)
        except FileExistsError:
            raise spool_in_the_way(stem) from None
        try:
            height, width = row["frames"].shape[:2]
            self.encoder = Encoder(folder / VIDEO, height, width, fps, crf, preset, folder / LOG, self.spool.lock_fd)
        except BaseException:
            self.spool.close()
            remove_folder(folder)
            raise
        self.encoder_ok = True
        self.payload_bytes = 0

    def write_video(self, frame: np.ndarray) -> None:
        try:
            self.encoder.write(frame)
        except OSError:
            self.encoder_ok = False
            raise

    def size(self) -> int:
        return self.payload_bytes + self.spool.video_bytes()


class SegmentWriter:
    """Writes one recording segment (possibly split into parts) from a background thread.

    `target` is an existing folder (the recordings root: files go to `<target>/<world>/<timestamp>`)
    or an explicit path stem (`runs/demo` -> `runs/demo.mp4` + `runs/demo.npz`; a `.mp4`/`.npz`
    suffix is dropped). `metadata` is merged into the npz's metadata JSON.
    """

    def __init__(self, target: str | Path, world: str, fps: float, metadata: Mapping[str, Any] | None = None,
                 max_bytes: int | None = None, *, crf: int = 18, preset: str = "veryfast",
                 queue_frames: int = 64) -> None:
        target = Path(target)
        check_world_name(world)
        if target.is_dir():
            self.stem = segment_stem(target, world)
        else:
            self.stem = target.with_suffix("") if target.suffix.lower() in (".mp4", ".npz") else target
        if with_suffix(self.stem, ".spool").exists():
            raise spool_in_the_way(self.stem)
        try:
            self.stem.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RecordingError(f"cannot create recording folder {self.stem.parent}: {exc.strerror}") from None
        if max_bytes is not None and max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.world = world
        self.fps = float(fps)
        self.max_bytes = max_bytes
        self.parts: list[Path] = []
        self.error: str | None = None
        self.frames_appended = 0
        self.frames_kept = 0
        self._metadata = dict(metadata or {})
        self._crf, self._preset = crf, preset
        self._spec: dict[str, tuple[tuple[int, ...], np.dtype]] | None = None
        self._t0 = time.perf_counter()
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, queue_frames))
        self._part: _Part | None = None
        self._written = 0
        self._dropped = 0
        self._outcome = ""
        self._closing = False
        self._close_queued = False
        self._reported = False
        self._finished = threading.Event()
        threading.Thread(target=self._run, name=f"recorder {self.stem.name}", daemon=True).start()
        OPEN_WRITERS.add(self)

    @classmethod
    def new_segment(cls, root: str | Path, world: str, fps: float, metadata: Mapping[str, Any] | None = None,
                    max_bytes: int | None = None, **options: Any) -> SegmentWriter:
        """A writer for `root/<world>/<YYYYmmdd-HHMMSS>` (the folders are created)."""
        return cls(segment_stem(root, world), world, fps, metadata, max_bytes, **options)

    def __enter__(self) -> SegmentWriter:
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except RecordingError as err:
            print(f"error: {err}", file=sys.stderr)

    def append(self, frame: np.ndarray | torch.Tensor, action: np.ndarray | torch.Tensor | Iterable[float],
               pose: np.ndarray | torch.Tensor | Iterable[float] | None = None, timestamp: float | None = None,
               extra: Mapping[str, np.ndarray | torch.Tensor] | None = None) -> None:
        """Queue one frame (H, W, 3) uint8 with its action (A,), pose (5,) or None, time and extra arrays.

        The arrays are copied, so the caller may reuse its buffers. The first frame fixes the frame
        size, action size and the names, shapes and dtypes of the extra arrays.
        """
        if self._closing:
            raise RuntimeError(f"recording {self.stem} is closed")
        if self.error is not None:
            self._dropped += 1
            return
        row = {
            "frames": np.array(to_numpy(frame), order="C", copy=True),
            "actions": np.array(to_numpy(action), dtype=np.float32).reshape(-1),
            "poses": (np.full(POSE_DIM, np.nan, dtype=np.float32) if pose is None
                      else np.array(to_numpy(pose), dtype=np.float32).reshape(-1)),
            "timestamps": np.float64(time.perf_counter() - self._t0 if timestamp is None else timestamp),
        }
        for name, value in (extra or {}).items():
            if name in RESERVED_KEYS or not name.isidentifier():
                raise ValueError(f"extra array name '{name}' is reserved or not an identifier")
            row[name] = np.array(to_numpy(value), order="C", copy=True)
        self._check(row)
        self._queue.put(row)
        self.frames_appended += 1

    def _check(self, row: dict[str, np.ndarray]) -> None:
        frame = row["frames"]
        if any(np.asarray(value).dtype.hasobject for value in row.values()):
            raise ValueError("recorded arrays must hold numbers, not Python objects")
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"frame must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
        if row["poses"].shape != (POSE_DIM,):
            raise ValueError(f"pose must have {POSE_DIM} values (x, y, z, pitch, yaw), got {row['poses'].shape}")
        spec = {name: (value.shape, value.dtype) for name, value in row.items()}
        if self._spec is None:
            self._spec = spec
        for name in {**self._spec, **spec}:
            if spec.get(name) != self._spec.get(name):
                raise ValueError(f"'{name}' of frame {self.frames_appended} is {spec.get(name)}, "
                                 f"expected {self._spec.get(name)} as in the first frame")

    def close(self) -> list[Path]:
        """Flush the queue and finalise the mp4 and npz of the open part; returns the part stems.

        Raises RecordingError (once) if the recording stopped early; what was written is kept.
        """
        self._closing = True
        if not self._close_queued:  # an interrupted put (a second Ctrl+C) is retried by the next close()
            self._queue.put(_CLOSE)
            self._close_queued = True
        # Not Thread.join(): once interrupted (a second Ctrl+C), CPython 3.11 marks the thread stopped while it
        # still runs (bpo-45274's handler), and the atexit close would then let the interpreter exit mid-write.
        while not self._finished.wait(_POLL_S):
            pass
        OPEN_WRITERS.discard(self)
        if self.error is not None and not self._reported:
            self._reported = True
            dropped = (f"; {self._dropped} later frame{'s were' if self._dropped > 1 else ' was'} not recorded"
                       if self._dropped else "")
            raise RecordingError(f"{self.error}: {self._outcome}{dropped}")
        return list(self.parts)

    # --- background thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._drain()
        finally:
            self._finished.set()

    def _drain(self) -> None:
        while True:
            try:  # a timeout, because a signal interrupting the producer's put() can lose its wake-up call
                row = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if row is _CLOSE:
                break
            if self.error is not None:
                self._dropped += 1
                continue
            written = self._written
            try:
                self._write(row)
            except Exception as exc:  # any failure ends the recording; the game goes on
                self._fail(exc, self._part.stem if self._part else self.stem)
                self._dropped += self._written == written
        if self._part is not None:
            self._finish_part()
        elif self.error is not None and not self._outcome:
            self._outcome = self._kept()

    def _write(self, row: dict[str, np.ndarray]) -> None:
        row_bytes = sum(np.asarray(value).nbytes for value in row.values())
        part = self._part
        if (part is not None and self.max_bytes is not None and part.spool.rows
                and part.size() + row_bytes > self.max_bytes):
            self._finish_part()
            if self.error is not None:
                return
            part = None
        if part is None:
            number = len(self.parts) + 1
            part = self._part = _Part(part_stem(self.stem, number), number, self._written, self._base_metadata(row),
                                      row, self.fps, self._crf, self._preset)
            self.parts.append(part.stem)
        part.spool.append(row)
        part.payload_bytes += row_bytes
        self._written += 1
        part.write_video(row["frames"])

    def _base_metadata(self, row: dict[str, np.ndarray]) -> dict:
        return {
            **self._metadata,
            "format": FORMAT_NAME, "version": FORMAT_VERSION, "world": self.world, "fps": self.fps,
            "frame_size": list(row["frames"].shape[:2]), "action_dim": int(row["actions"].shape[0]),
            "extra_keys": [name for name in row if name not in BASE_KEYS],
            "created": datetime.now().isoformat(timespec="seconds"), "recovered": False,
        }

    def _finish_part(self) -> None:
        """Close the mp4 and turn the spool into the npz; on failure the spool stays for recover_segment."""
        part, self._part = self._part, None
        part.spool.release_reserve()  # room for ffmpeg's last frames and the npz's end, even on a full disk
        try:
            part.encoder.close()
        except Exception as exc:
            self._fail(exc, part.stem)
            part.encoder_ok = False
        try:
            kept = complete_part(part.stem, part.spool, encoder_ok=part.encoder_ok, crf=self._crf,
                                 preset=self._preset)
        except Exception as exc:
            part.spool.close()
            self._fail(exc, part.stem)
            self._outcome = (f"{self.frames_kept} frames kept in finished parts, the rest in "
                             f"{with_suffix(part.stem, '.spool')}: rebuild it with `{recover_command(part.stem)}`")
            return
        if kept == 0:
            self.parts.remove(part.stem)
        self.frames_kept += kept
        self._outcome = self._kept()

    def _kept(self) -> str:
        if not self.parts:
            return f"{self.frames_kept} frames kept"
        where = f"{self.parts[-1]}.mp4 and {self.parts[-1].name}.npz"
        if len(self.parts) == 1:
            return f"{self.frames_kept} frames kept in {where}"
        return f"{self.frames_kept} frames kept in {len(self.parts)} parts, the last {where}"

    def _fail(self, exc: BaseException, stem: Path) -> None:
        if self.error is None:
            self.error = f"recording stopped ({write_failure(exc)}) while writing {stem}"


OPEN_WRITERS: set[SegmentWriter] = set()
