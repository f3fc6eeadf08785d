"""The project's own recordings (engine/recordings `.npz`) as training episodes.

A recording already holds one action per frame in the engine's convention (`actions[t]` conditioned
frame t), its exact frames and poses. Optional per-frame extras `rewards` and `ends` (written with
`SegmentWriter.append(extra=...)`, e.g. by an Atari world) follow the same convention: the reward and
episode end of the transition into frame t.

Only the small arrays are read up front. `frames` is memory-mapped from the npz (the recorder writes it
uncompressed), so a folder of long recordings costs no RAM until frames are used; so is a game's depth buffer
(`depth`, e.g. the doom-game world's, with `depth_units` map units per level in the metadata).
"""

from __future__ import annotations

import json
import struct
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from numpy.lib import format as npy_format

from engine.errors import ConfigError
from engine.train.data.episode import Episode

LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # zip local file header: name and extra lengths are the last two
PER_FRAME = {"actions": (np.float32, 2), "poses": (np.float32, 2)}


def _npy_layout(path: Path, member: str) -> tuple[tuple[int, ...], np.dtype, int | None]:
    """Shape, dtype and the file offset of the raw data of `member` (None when it is compressed)."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
        with archive.open(info) as stream:
            version = npy_format.read_magic(stream)
            read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
            shape, fortran, dtype = read_header(stream)
            header_bytes = stream.tell()
    if fortran or info.compress_type != zipfile.ZIP_STORED:
        return shape, dtype, None
    with open(path, "rb") as raw:
        raw.seek(info.header_offset)
        fields = LOCAL_HEADER.unpack(raw.read(LOCAL_HEADER.size))
    return shape, dtype, info.header_offset + LOCAL_HEADER.size + fields[-2] + fields[-1] + header_bytes


class NpzFrames:
    """A recording's `frames` (T, H, W, 3) uint8, memory-mapped (or loaded, if the npz is compressed); with
    `name="depth"` and `channels=None`, its game depth buffer (T, H, W) uint8 the same way."""

    def __init__(self, path: Path, name: str = "frames", channels: int | None = 3) -> None:
        self.path, self.name = path, name
        try:
            shape, dtype, self._offset = _npy_layout(path, f"{name}.npy")
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
            raise ConfigError(f"recording {path}: '{name}' is not readable ({exc})") from None
        if len(shape) != (4 if channels else 3) or (channels and shape[3] != channels) or dtype != np.uint8:
            expected = f"(T, H, W, {channels})" if channels else "(T, H, W)"
            raise ConfigError(f"recording {path}: '{name}' is {shape} {dtype}, expected {expected} uint8")
        self.shape = shape
        self.num_frames = shape[0]
        self.size = (shape[1], shape[2])
        self._array: np.ndarray | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}  # each DataLoader worker maps the file itself

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            if self._offset is None:
                with np.load(self.path, allow_pickle=False) as data:
                    self._array = data[self.name]
            else:
                self._array = np.memmap(self.path, dtype=np.uint8, mode="r", offset=self._offset, shape=self.shape)
        return self._array

    def read(self, indices: Sequence[int]) -> np.ndarray:
        return np.array(self.array[np.asarray(indices, dtype=np.int64)])  # a plain, writable copy

    def iter_chunks(self, start: int, stop: int, chunk: int) -> Iterator[np.ndarray]:
        for first in range(start, stop, chunk):
            yield np.array(self.array[first:min(first + chunk, stop)])


def _read_arrays(path: Path) -> tuple[dict[str, np.ndarray], dict, set[str]]:
    """The small per-frame arrays, the metadata and the names of every array in the npz."""
    try:
        with np.load(path, allow_pickle=False) as data:
            names = set(data.files)
            missing = [key for key in ("frames", "actions", "poses", "metadata") if key not in names]
            if missing:
                raise ConfigError(f"recording {path} lacks '{missing[0]}' (expected frames, actions, poses, metadata)")
            arrays = {key: data[key] for key in ("actions", "poses", "rewards", "ends") if key in names}
            metadata = json.loads(data["metadata"].item())
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ConfigError(f"recording {path} is not a readable npz ({exc})") from None
    return arrays, metadata, names


def _per_frame(arrays: dict[str, np.ndarray], key: str, count: int, path: Path) -> np.ndarray | None:
    if key not in arrays:
        return None
    value = arrays[key]
    if value.ndim != 1 or len(value) != count or not np.isfinite(value.astype(np.float64)).all():
        raise ConfigError(f"recording {path}: '{key}' is {value.shape} {value.dtype}, expected ({count},) finite "
                          "numbers (one per frame)")
    return value


def load_recording_episode(path: str | Path) -> Episode:
    """A recording `.npz` (or the npz beside an `.mp4`) as an Episode whose frames are read on demand."""
    path = Path(path)
    if path.suffix.lower() == ".mp4":
        path = path.with_suffix(".npz")
    if not path.is_file():
        raise ConfigError(f"recording {path} does not exist")
    arrays, metadata, names = _read_arrays(path)
    frames = NpzFrames(path)
    count = frames.num_frames
    if count == 0:
        raise ConfigError(f"recording {path} has no frames")
    for key, (dtype, ndim) in PER_FRAME.items():
        value = arrays[key]
        if value.dtype != dtype or value.ndim != ndim or len(value) != count:
            raise ConfigError(f"recording {path}: '{key}' is {value.shape} {value.dtype}, expected {ndim}-D "
                              f"{np.dtype(dtype)} with {count} rows")
    rewards = _per_frame(arrays, "rewards", count, path)
    ends = _per_frame(arrays, "ends", count, path)
    depth = NpzFrames(path, "depth", channels=None) if "depth" in names else None
    if depth is not None and (depth.num_frames, depth.size) != (count, frames.size):
        raise ConfigError(f"recording {path}: 'depth' is {depth.shape}, expected one (H, W) = {frames.size} "
                          f"buffer per frame ({count})")
    return Episode(
        name=path.stem, actions=torch.from_numpy(arrays["actions"]), poses=torch.from_numpy(arrays["poses"]),
        frames=frames, rewards=None if rewards is None else torch.from_numpy(rewards.astype(np.float32)),
        ends=None if ends is None else torch.from_numpy(ends.astype(bool)),
        fps=float(metadata.get("fps", 20.0)), source=str(path), depth=depth,
        info={"format": "recording", "world": metadata.get("world"), "depth_units": metadata.get("depth_units")})
