"""Recording segments: frames + actions + poses -> an H.264 mp4 and an npz, written off the game loop.

Files of one segment with stem S (by default `recordings/<world>/<YYYYmmdd-HHMMSS>`):

* `S.mp4`: H.264, yuv420p, constant frame rate `fps`, CRF 18 (x264 preset `veryfast`), encoded by the
  ffmpeg binary that imageio-ffmpeg ships. Frames keep their size (imageio's macro-block rounding would
  rescale them); an odd width or height is padded by one black pixel, as yuv420p needs even sizes.
* `S.npz` (uncompressed, `np.load(S.npz)` with the default `allow_pickle=False` reads it):

  | entry | shape, dtype | content |
  |---|---|---|
  | `frames` | (T, H, W, 3) uint8 | the exact RGB frames (the mp4 is lossy) |
  | `actions` | (T, A) float32 | the action that conditioned frame t |
  | `poses` | (T, 5) float32 | x, y, z, pitch, yaw; NaN where the world has no pose |
  | `timestamps` | (T,) float64 | seconds since the writer was opened, unless given to `append` |
  | `<name>` | (T, ...) as given | each per-frame array passed as `append(extra={name: ...})` |
  | `metadata` | 0-d str | a JSON object, below |

  `metadata` holds `format` ("neural-game-engine/recording"), `version` (1), `world`, `fps`, `part`
  (1-based), `first_frame` (index of this part's first frame in the whole recording), `num_frames`,
  `frame_size` ([H, W]), `action_dim`, `extra_keys`, `created` (local ISO-8601 time), `recovered`
  (true when rebuilt by `recover_segment`), plus every other key of the `metadata` dict given to the
  writer (checkpoint sha256, sampler settings, seed, backend, ...); the writer's own keys take precedence.

* Parts: with `max_bytes`, a segment whose npz payload plus mp4 would grow past it continues in
  `S-part2.mp4/.npz`, `S-part3...`; the mp4 size is what ffmpeg has flushed so far, so a part can run
  over by the encoder's lookahead (a few frames).

Threading and crash safety: `append` copies the frame and puts it on a bounded queue (it blocks only
when `queue_frames` frames are waiting, i.e. when the disk cannot keep up); a background thread pipes
frames to ffmpeg and spools the rows, every `chunk_frames` frames, into `S.spool/chunk_NNNNNN.npz`
(each written to a temporary name, then renamed). `close()` finishes the mp4, streams the chunks into
`S.npz.tmp`, renames it to `S.npz` and deletes the spool. If the process dies without closing (SIGKILL,
power loss), the spool still holds every finished chunk and `recover_segment(S)` rebuilds `S.npz` and,
when the mp4 was left unfinished, re-encodes it from the frames: at most the last chunk is lost.
Writers still open at interpreter exit (normal exit, uncaught exception, KeyboardInterrupt) are closed
by an atexit hook; `install_signal_finalizers()` makes SIGTERM/SIGHUP raise `Terminated` so that they
end the same way instead of killing the process outright.

A full disk (or any other write error) stops the recording with one message, available at once as
`writer.error` and raised by `close()` as `RecordingError`; everything written until then is kept.
"""

from __future__ import annotations

import atexit
import collections
import errno
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.lib import format as npy_format

from engine.errors import ConfigError, EngineError

FORMAT_NAME = "neural-game-engine/recording"
FORMAT_VERSION = 1
POSE_DIM = 5
BASE_KEYS = ("frames", "actions", "poses", "timestamps")
RESERVED_KEYS = (*BASE_KEYS, "metadata")
_CLOSE = object()


class RecordingError(EngineError):
    """A recording could not be written completely (disk full, ffmpeg failure)."""


class Terminated(SystemExit):
    """SIGTERM/SIGHUP turned into an exception, so `finally` blocks and atexit hooks still run."""


def segment_stem(root: str | Path, world: str, when: datetime | None = None) -> Path:
    """`root/<world>/<YYYYmmdd-HHMMSS>`, with `-2`, `-3`... appended if that segment already exists."""
    base = Path(root) / world / (when or datetime.now()).strftime("%Y%m%d-%H%M%S")
    stem, n = base, 1
    while any(_with_suffix(stem, s).exists() for s in (".mp4", ".npz", ".spool")):
        n += 1
        stem = base.with_name(f"{base.name}-{n}")
    return stem


def _with_suffix(stem: Path, suffix: str) -> Path:
    return stem.with_name(stem.name + suffix)


def _part_stem(stem: Path, part: int) -> Path:
    return stem if part == 1 else stem.with_name(f"{stem.name}-part{part}")


def _json_default(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") else str(value)


def _describe(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _disk_full(exc: BaseException) -> bool:
    return getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in str(exc)


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


class _Encoder:
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
            raise self._failure(_describe(exc)) from None

    def close(self) -> None:
        with suppress(OSError):
            self._proc.stdin.close()
        code = self._proc.wait()
        self._drain.join(timeout=5)
        if code != 0:
            raise self._failure(f"exit status {code}")


def _write_chunk(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """One spool chunk, written to a temporary name and renamed so a crash never leaves half a chunk."""
    tmp = _with_suffix(path, ".tmp")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _spool_chunks(spool: Path) -> list[Path]:
    return sorted(spool.glob("chunk_*.npz"))


@contextmanager
def _arrays(source: Path | Mapping[str, np.ndarray]) -> Iterator[Mapping[str, np.ndarray]]:
    """A spool chunk (read lazily, one array at a time) or rows still in memory."""
    if isinstance(source, Path):
        with np.load(source, allow_pickle=False) as data:
            yield data
    else:
        yield source


def _assemble_npz(target: Path, chunks: list[Path], pending: Mapping[str, np.ndarray] | None,
                  metadata: dict) -> int:
    """Stream spool chunks (+ rows still in memory) into `target` via `target.tmp`; returns the frame count.

    Each array becomes one `.npy` member written chunk by chunk, so memory stays at one chunk. The
    first chunk that cannot be read (only possible if the file system lost it) ends the sequence.
    """
    sources: list[Path | Mapping[str, np.ndarray]] = []
    counts: list[int] = []
    for path in chunks:
        try:
            with _arrays(path) as data:
                counts.append(len(data["timestamps"]))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
            break
        sources.append(path)
    if pending is not None:
        sources.append(pending)
        counts.append(len(pending["timestamps"]))
    if not sources:
        return 0
    with _arrays(sources[0]) as first:
        specs = {name: (first[name].shape[1:], first[name].dtype) for name in first}
    total = sum(counts)
    metadata = {**metadata, "num_frames": total}
    tmp = _with_suffix(target, ".tmp")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, (shape, dtype) in specs.items():
                with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                    npy_format.write_array_header_1_0(member, {
                        "descr": npy_format.dtype_to_descr(dtype), "fortran_order": False,
                        "shape": (total, *shape)})
                    for source in sources:
                        with _arrays(source) as data:
                            member.write(np.ascontiguousarray(data[name], dtype=dtype).data)
            with zf.open("metadata.npy", "w") as member:
                npy_format.write_array(member, np.array(json.dumps(metadata, default=_json_default)))
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return total


class _Part:
    """One mp4 + npz pair being written: encoder, spool folder, rows not yet spooled."""

    def __init__(self, stem: Path, number: int, first_frame: int, metadata: dict, frame_shape: tuple[int, ...],
                 fps: float, crf: int, preset: str) -> None:
        self.stem = stem
        self.number = number
        self.spool = _with_suffix(stem, ".spool")
        self.spool.mkdir(parents=True, exist_ok=True)
        self.metadata = {**metadata, "part": number, "first_frame": first_frame}
        try:
            (self.spool / "metadata.json").write_text(json.dumps(self.metadata, default=_json_default))
            self.encoder = _Encoder(_with_suffix(stem, ".mp4"), frame_shape[0], frame_shape[1], fps, crf, preset)
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
        _write_chunk(self.spool / f"chunk_{self.chunks:06d}.npz", arrays)
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
        _OPEN_WRITERS.add(self)

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
            "frames": np.array(_to_numpy(frame), order="C", copy=True),
            "actions": np.array(_to_numpy(action), dtype=np.float32).reshape(-1),
            "poses": (np.full(POSE_DIM, np.nan, dtype=np.float32) if pose is None
                      else np.array(_to_numpy(pose), dtype=np.float32).reshape(-1)),
            "timestamps": np.float64(time.perf_counter() - self._t0 if timestamp is None else timestamp),
        }
        for name, value in (extra or {}).items():
            if name in RESERVED_KEYS or not name.isidentifier():
                raise ValueError(f"extra array name '{name}' is reserved or not an identifier")
            row[name] = np.array(_to_numpy(value), order="C", copy=True)
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
        _OPEN_WRITERS.discard(self)
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
                _part_stem(self.stem, number), number, self._written, self._base_metadata(row),
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
            self.frames_kept += _assemble_npz(_with_suffix(part.stem, ".npz"), _spool_chunks(part.spool),
                                              part.pending(), part.metadata)
        except Exception as exc:
            self._fail(exc, part.stem)
            with suppress(Exception):
                part.spool_rows()
            self._outcome = (f"{self.frames_kept} frames kept in finished parts, the rest in {part.spool}: "
                             f"rebuild with app.recording.recover_segment('{part.stem}')")
            return
        shutil.rmtree(part.spool, ignore_errors=True)
        self._outcome = f"{self.frames_kept} frames kept (last: {part.stem}.mp4/.npz)"

    def _fail(self, exc: BaseException, stem: Path) -> None:
        if self.error is None:
            cause = "disk full" if _disk_full(exc) else _describe(exc)
            self.error = f"recording stopped ({cause}) while writing {stem}"


_OPEN_WRITERS: set[SegmentWriter] = set()
_EXTRA_CLOSERS: list[Callable[[], Iterable[Any]]] = []


def _close_all_at_exit() -> None:
    if threading.current_thread() is threading.main_thread():
        # a second Ctrl+C or SIGTERM must not interrupt the finalisation it asked for
        for signum in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if signum is not None:
                signal.signal(signum, signal.SIG_IGN)
    writers = [*_OPEN_WRITERS, *(w for getter in _EXTRA_CLOSERS for w in getter())]
    for writer in dict.fromkeys(writers):
        try:
            writer.close()
        except EngineError as exc:
            print(f"error: {exc}", file=sys.stderr)


atexit.register(_close_all_at_exit)


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(128 + signum)


def install_signal_finalizers(writers_getter: Callable[[], Iterable[Any]] | None = None) -> Callable[[], None]:
    """Make SIGTERM/SIGHUP (and SIGINT, unless ignored) end the program through exceptions, so open
    recordings are finalised by `with`/`finally` blocks or, at the latest, by the atexit hook.

    Every open SegmentWriter is closed at exit anyway; `writers_getter` adds other objects with a
    `close()` method. Call from the main thread. Returns a function that restores the previous handlers.
    """
    if writers_getter is not None:
        _EXTRA_CLOSERS.append(writers_getter)
    previous: dict[int, Any] = {}
    wanted = [(signal.SIGTERM, _raise_terminated), (signal.SIGINT, signal.default_int_handler)]
    if hasattr(signal, "SIGHUP"):
        wanted.append((signal.SIGHUP, _raise_terminated))
    for signum, handler in wanted:
        current = signal.getsignal(signum)
        if current is signal.SIG_IGN:
            continue
        previous[signum] = signal.signal(signum, handler)

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if writers_getter is not None and writers_getter in _EXTRA_CLOSERS:
            _EXTRA_CLOSERS.remove(writers_getter)

    return restore


def recover_segment(stem: str | Path, *, crf: int = 18, preset: str = "veryfast") -> Path:
    """Finish a segment a crashed process left unfinalised: npz from the spool, mp4 re-encoded if needed.

    Returns the npz path. A segment that is already complete is left as it is.
    """
    stem = Path(stem)
    stem = stem.with_suffix("") if stem.suffix.lower() in (".mp4", ".npz", ".spool") else stem
    spool, npz, mp4 = _with_suffix(stem, ".spool"), _with_suffix(stem, ".npz"), _with_suffix(stem, ".mp4")
    if not spool.is_dir():
        if npz.is_file():
            return npz
        raise ConfigError(f"recording {stem}: neither {npz.name} nor {spool.name} exists")
    try:
        metadata = json.loads((spool / "metadata.json").read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"recording {stem}: {spool}/metadata.json is unreadable ({_describe(exc)})") from None
    metadata["recovered"] = True
    frames = _assemble_npz(npz, _spool_chunks(spool), None, metadata)
    if frames == 0:
        raise ConfigError(f"recording {stem}: the spool holds no complete chunk; nothing to recover")
    if _mp4_frames(mp4) != frames:
        _reencode(npz, mp4, float(metadata.get("fps", 20)), crf, preset)
    shutil.rmtree(spool, ignore_errors=True)
    return npz


def _mp4_frames(path: Path) -> int | None:
    import imageio_ffmpeg

    if not path.is_file():
        return None
    try:
        return imageio_ffmpeg.count_frames_and_secs(str(path))[0]
    except (RuntimeError, OSError, ValueError):
        return None


def _reencode(npz: Path, mp4: Path, fps: float, crf: int, preset: str) -> None:
    with np.load(npz, allow_pickle=False) as data:
        frames = data["frames"]
        encoder = _Encoder(mp4, frames.shape[1], frames.shape[2], fps, crf, preset)
        for frame in frames:
            encoder.write(np.ascontiguousarray(frame))
        encoder.close()


def read_recording(path: str | Path) -> dict[str, Any]:
    """Load a recording npz (or the npz beside an mp4/stem): every array plus `metadata` as a dict."""
    path = Path(path)
    if path.suffix.lower() == ".mp4":
        path = path.with_suffix(".npz")
    elif path.suffix.lower() != ".npz":
        path = _with_suffix(path, ".npz")
    if not path.is_file():
        stem = path.with_suffix("")
        if _with_suffix(stem, ".spool").is_dir():
            raise ConfigError(f"recording {path} was not finalised: rebuild it with "
                              f"app.recording.recover_segment('{stem}')")
        raise ConfigError(f"recording {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            out: dict[str, Any] = {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ConfigError(f"recording {path} is not a readable npz ({_describe(exc)})") from None
    missing = [key for key in RESERVED_KEYS if key not in out]
    if missing:
        raise ConfigError(f"recording {path} lacks '{missing[0]}' (expected {', '.join(RESERVED_KEYS)})")
    try:
        out["metadata"] = json.loads(out["metadata"].item())
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"recording {path}: 'metadata' is not JSON ({exc})") from None
    expected = {"frames": (np.uint8, 4), "actions": (np.float32, 2), "poses": (np.float32, 2),
                "timestamps": (np.float64, 1)}
    count = len(out["frames"])
    for key, (dtype, ndim) in expected.items():
        value = out[key]
        if value.dtype != dtype or value.ndim != ndim or len(value) != count:
            raise ConfigError(f"recording {path}: '{key}' is {value.shape} {value.dtype}, expected {ndim}-D "
                              f"{np.dtype(dtype)} with {count} rows")
    return out
