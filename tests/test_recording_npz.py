"""The npz written in place (`engine.recordings.npzfile`): CRCs, zip64, and what zip readers make of it."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

import engine.recordings.npzfile as npzfile
from engine.recordings.npzfile import (
    FramesNpz,
    Member,
    array_header,
    crc32_combine,
    frames_and_metadata,
    iter_frames,
)


def test_crc32_combine_matches_zlib():
    rng = random.Random(7)
    cases = [(b"", b""), (b"", b"abc"), (b"abc", b"")]
    cases += [(rng.randbytes(rng.randrange(300)), rng.randbytes(rng.randrange(5000))) for _ in range(40)]
    for first, second in cases:
        assert crc32_combine(zlib.crc32(first), zlib.crc32(second), len(second)) == zlib.crc32(first + second)


def test_frames_header_has_one_length_for_every_count():
    lengths = {len(npzfile.frames_header(count, (40, 60, 3))) for count in (0, 1, 12345, 10**19 - 1)}
    assert len(lengths) == 1 and lengths.pop() % 64 == 0  # numpy's alignment of the data after the header


def _write(path: Path, frames: np.ndarray, actions: np.ndarray, metadata: dict, room: int = 0) -> None:
    npz = FramesNpz(path, frames.shape[1:], create=True)
    npz.allocate(npz.data_start + room)
    for index, frame in enumerate(frames):
        npz.put(index, frame)
        npz.commit(frame)
    side = path.with_name("actions.rows")
    side.write_bytes(actions.tobytes())
    text = np.array(json.dumps(metadata))
    members = [Member("actions.npy", array_header(actions.dtype, actions.shape),
                      len(array_header(actions.dtype, actions.shape)) + actions.nbytes, side),
               Member("metadata.npy", array_header(text.dtype, ()), len(array_header(text.dtype, ())) + text.nbytes,
                      text.tobytes())]
    npz.finish(members)


@pytest.mark.parametrize("zip64_limit", [0xFFFFFFFF, 100])
def test_npz_reads_back_with_numpy_and_zip_tools(tmp_path, monkeypatch, zip64_limit):
    """Also with every size and offset above 100 bytes stored as zip64 (as a > 4 GiB recording stores them)."""
    monkeypatch.setattr(npzfile, "ZIP64_LIMIT", zip64_limit)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (9, 5, 7, 3), dtype=np.uint8)
    actions = rng.standard_normal((9, 4)).astype(np.float32)
    path = tmp_path / "x.npz"
    _write(path, frames, actions, {"world": "w"}, room=1 << 16)
    assert path.stat().st_size < 4096, "the space claimed ahead is given back"
    with np.load(path, allow_pickle=False) as data:
        assert data.files == ["frames", "actions", "metadata"]
        np.testing.assert_array_equal(data["frames"], frames)
        np.testing.assert_array_equal(data["actions"], actions)
        assert json.loads(data["metadata"].item()) == {"world": "w"}
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None  # every CRC checks
        assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
    assert frames_and_metadata(path) == (9, json.dumps({"world": "w"}))
    np.testing.assert_array_equal(np.stack(list(iter_frames(path))), frames)
    if shutil.which("unzip"):
        result = subprocess.run(["unzip", "-t", str(path)], capture_output=True, text=True)
        assert result.returncode == 0 and "No errors detected" in result.stdout, result.stdout + result.stderr


def test_rescan_recomputes_the_crc_from_disk(tmp_path):
    """Recovery counts the frames already on disk (here: 5 of the 6 put, the sixth never committed)."""
    frames = np.random.default_rng(1).integers(0, 256, (6, 4, 6, 3), dtype=np.uint8)
    path = tmp_path / "y.npz"
    npz = FramesNpz(path, frames.shape[1:], create=True)
    for index, frame in enumerate(frames):
        npz.put(index, frame)
    npz.close()
    again = FramesNpz(path, frames.shape[1:], create=False)
    again.rescan(5)
    text = np.array("{}")
    again.finish([Member("metadata.npy", array_header(text.dtype, ()), len(array_header(text.dtype, ())) + text.nbytes,
                         text.tobytes())])
    with np.load(path) as data:
        np.testing.assert_array_equal(data["frames"], frames[:5])
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
