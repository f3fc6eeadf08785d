"""`SegmentWriter`: one recording segment (possibly in parts) written from a background thread."""

from __future__ import annotations

import json
import queue
import shutil
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from contextlib import suppress
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.recordings.encoder import Encoder
from engine.recordings.format import (
    BASE_KEYS,
    FORMAT_NAME,
    FORMAT_VERSION,
    POSE_DIM,
    RESERVED_KEYS,
    RecordingError,
    describe,
    disk_full,
    json_default,
    part_stem,
    segment_stem,
    to_numpy,
    with_suffix,
)
from engine.recordings.spool import assemble_npz, spool_chunks, write_chunk

_CLOSE = object()


class _Part:
    """One mp4 + npz pair being written: encoder, spool folder, rows not yet spooled."""

    def __init__(self, stem: Path, number: int, first_frame: int, metadata: dict, frame_shape: tuple[int, ...],
                 fps: float, crf: int, preset: str) -> None:
        self.stem = stem
        self.number = number
        self.spool = with_suffix(stem, ".spool")
        self.spool.mkdir(parents=True, exist_ok=True)
        self.metadata = {**metadata, "part": number, "first_frame": first_frame}
        try:
            (self.spool / "metadata.json").write_text(json.dumps(self.metadata, default=json_default))
            self.encoder = Encoder(with_suffix(stem, ".mp4"), frame_shape[0], frame_shape[1], fps, crf, preset)
        except BaseException:
            shutil.rmtree(self.spool, ignore_errors=True)
            raise
        self.rows: dict[str, list[np.ndarray]] = {}
        self.frames = 0
        self.chunks = 0
        self.payload_bytes = 0

    def add(self, row: dict[str, np.ndarray], row_bytes: int, chunk_frames: int) -> None:
        for name, value in row.items():
            self.rows.setdefault(name, []).append(value)
        self.frames += 1
        self.payload_bytes += row_bytes
        self.encoder.write(row["frames"])
        if len(self.rows["frames"]) >= chunk_frames:
            self.spool_rows()

    def size(self) -> int:
        try:
            return self.payload_bytes + self.encoder.path.stat().st_size
        except OSError:
            return self.payload_bytes

    def pending(self) -> dict[str, np.ndarray] | None:
        if not self.rows:
            return None
        return {name: np.stack(values) for name, values in self.rows.items()}

    def spool_rows(self) -> None:
        arrays = self.pending()
        if arrays is None:
            return
        write_chunk(self.spool / f"chunk_{self.chunks:06d}.npz", arrays)
        self.chunks += 1
        self.rows.clear()


class SegmentWriter:
    """Writes one recording segment (possibly split into parts) from a background thread.

    `target` is an existing folder (the recordings root: files go to `<target>/<world>/<timestamp>`)
    or an explicit path stem (`runs/demo` -> `runs/demo.mp4` + `runs/demo.npz`; a `.mp4`/`.npz`
    suffix is dropped). `metadata` is merged into the npz's metadata JSON.
    """

    def __init__(self, target: str | Path, world: str, fps: float, metadata: Mapping[str, Any] | None = None,
                 max_bytes: int | None = None, *, crf: int = 18, preset: str = "veryfast",
                 chunk_frames: int = 20, queue_frames: int = 64) -> None:
        target = Path(target)
        if target.is_dir():
            self.stem = segment_stem(target, world)
        else:
            self.stem = target.with_suffix("") if target.suffix.lower() in (".mp4", ".npz") else target
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
        self._crf, self._preset, self._chunk_frames = crf, preset, max(1, chunk_frames)
        self._spec: dict[str, tuple[tuple[int, ...], np.dtype]] | None = None
        self._t0 = time.perf_counter()
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, queue_frames))
        self._part: _Part | None = None
        self._written = 0
        self._dropped = 0
        self._outcome = ""
        self._closing = False
        self._reported = False
        self._thread = threading.Thread(target=self._run, name=f"recorder {self.stem.name}", daemon=True)
        self._thread.start()
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
        if not self._closing:
            self._closing = True
            self._queue.put(_CLOSE)
        self._thread.join()
        OPEN_WRITERS.discard(self)
        if self.error is not None and not self._reported:
            self._reported = True
            dropped = f"; {self._dropped} later frames were not recorded" if self._dropped else ""
            raise RecordingError(f"{self.error}: {self._outcome}{dropped}")
        return list(self.parts)

    # --- background thread -------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            row = self._queue.get()
            if row is _CLOSE:
                break
            if self.error is not None:
                self._dropped += 1
                continue
            try:
                self._write(row)
            except Exception as exc:  # any failure ends the recording; the game goes on
                self._fail(exc, self._part.stem if self._part else self.stem)
        if self._part is not None:
            self._finish_part()
        elif self.error is not None and not self._outcome:
            self._outcome = f"{self.frames_kept} frames kept"

    def _write(self, row: dict[str, np.ndarray]) -> None:
        row_bytes = sum(value.nbytes for value in row.values())
        part = self._part
        if part is not None and self.max_bytes is not None and part.frames and part.size() + row_bytes > self.max_bytes:
            self._finish_part()
            if self.error is not None:
                self._dropped += 1
                return
            part = None
        if part is None:
            number = len(self.parts) + 1
            part = self._part = _Part(
                part_stem(self.stem, number), number, self._written, self._base_metadata(row),
                row["frames"].shape, self.fps, self._crf, self._preset)
            self.parts.append(part.stem)
        self._written += 1
        part.add(row, row_bytes, self._chunk_frames)

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
        try:
            part.encoder.close()
        except Exception as exc:
            self._fail(exc, part.stem)
        try:
            self.frames_kept += assemble_npz(with_suffix(part.stem, ".npz"), spool_chunks(part.spool),
                                              part.pending(), part.metadata)
        except Exception as exc:
            self._fail(exc, part.stem)
            with suppress(Exception):
                part.spool_rows()
            self._outcome = (f"{self.frames_kept} frames kept in finished parts, the rest in {part.spool}: "
                             f"rebuild with `python -m engine.recordings recover {part.stem}`")
            return
        shutil.rmtree(part.spool, ignore_errors=True)
        self._outcome = f"{self.frames_kept} frames kept (last: {part.stem}.mp4/.npz)"

    def _fail(self, exc: BaseException, stem: Path) -> None:
        if self.error is None:
            cause = "disk full" if disk_full(exc) else describe(exc)
            self.error = f"recording stopped ({cause}) while writing {stem}"


OPEN_WRITERS: set[SegmentWriter] = set()
