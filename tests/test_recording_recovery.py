"""Recovering killed recordings end to end: `--view`/`--replay` name the recover command, the command works,
the mp4 is re-encoded when its encoder died too, only whole rows count, and a failed recovery can be retried."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from app.replay import RecordingViewer, load_replay
from engine.errors import ConfigError
from engine.recordings import RecordingError, SegmentWriter, read_recording, recover_segment
from engine.recordings.recovery import mp4_frames
from engine.recordings.spool import VIDEO, Spool, try_lock
from tests.conftest import PROJECT_ROOT
from tests.test_recording import _check_frames_in_order, _check_pair, _start_child, make_frame, spool_rows
from tests.test_recording_diskfull import _limit_file_size


@pytest.fixture
def children():
    """Recording processes a test starts; whatever a failed test left running is killed."""
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            _kill(proc)


def _recording_child(tmp_path: Path, name: str, rows: int, children: list) -> tuple[subprocess.Popen, Path]:
    """A process recording `tmp_path/name` that has written at least `rows` rows."""
    stem = tmp_path / name
    proc = _start_child(tmp_path, stem)
    children.append(proc)
    deadline = time.monotonic() + 30
    while spool_rows(stem.with_name(name + ".spool")) < rows:
        assert time.monotonic() < deadline, "the child recorded too little"
        time.sleep(0.02)
    return proc, stem


def _kill(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.communicate(timeout=60)


def _recover_command(stem: Path, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "engine.recordings", "recover", str(stem)], cwd=PROJECT_ROOT,
                          env=env, capture_output=True, text=True, timeout=120, **kwargs)


def test_view_and_replay_name_the_recover_command(tmp_path, children):
    proc, stem = _recording_child(tmp_path, "seg", 5, children)
    npz, mp4 = stem.with_name("seg.npz"), stem.with_name("seg.mp4")
    try:
        with pytest.raises(ConfigError, match="still being written"):
            RecordingViewer(npz)
        with pytest.raises(ConfigError, match="still being written"):
            recover_segment(stem, wait=0.2)
    finally:
        _kill(proc)
    lock = try_lock(stem.with_name("seg.spool"), wait=10)  # its ffmpeg finished the file
    os.close(lock)
    command = f"`python -m engine.recordings recover {stem}`"
    for open_it in (lambda: RecordingViewer(mp4), lambda: RecordingViewer(npz), lambda: load_replay(npz)):
        with pytest.raises(ConfigError) as exc:
            open_it()
        assert "was not finalised" in str(exc.value) and command in str(exc.value) and "\n" not in str(exc.value)
    rows = spool_rows(stem.with_name("seg.spool"))
    result = _recover_command(stem)
    assert result.returncode == 0 and f"recovered {mp4} and seg.npz: {rows} frames" in result.stdout, result.stderr
    viewer = RecordingViewer(npz)
    assert viewer.total == rows and viewer.metadata["recovered"] is True
    viewer = RecordingViewer(mp4)
    assert viewer.total == rows
    viewer.stop()
    assert len(load_replay(npz).actions) == rows
    again = _recover_command(stem)
    assert again.returncode == 0 and "is complete" in again.stdout
    missing = _recover_command(tmp_path / "nothing")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "neither" in missing.stderr


def _encoder_pid(pid: int) -> int:
    """The ffmpeg that process `pid` started (from its writer thread, so every thread's children are read)."""
    pids = [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()]
    ffmpeg = [child for child in pids if b"ffmpeg" in Path(f"/proc/{child}/cmdline").read_bytes()]
    assert len(ffmpeg) == 1, pids
    return ffmpeg[0]


def test_recover_reencodes_when_the_encoder_died_too(tmp_path, children):
    """Power loss or an OOM kill of both: the mp4 lacks its tail, so it is rebuilt from the npz."""
    proc, stem = _recording_child(tmp_path, "both", 30, children)
    encoder = _encoder_pid(proc.pid)
    os.kill(encoder, signal.SIGSTOP)  # frozen, it cannot finish its file when the pipe closes
    try:
        _kill(proc)
    finally:
        os.kill(encoder, signal.SIGKILL)
        os.kill(encoder, signal.SIGCONT)
    spool = stem.with_name("both.spool")
    lock = try_lock(spool, wait=10)
    assert lock is not None
    os.close(lock)
    rows, encoded = spool_rows(spool), mp4_frames(spool / VIDEO) or 0
    assert encoded < rows, "x264 held frames back that died with it"
    recover_segment(stem)
    data = _check_pair(stem)
    assert len(data["frames"]) == rows
    _check_frames_in_order(data)


def test_recovery_keeps_whole_rows_only(tmp_path, children):
    proc, stem = _recording_child(tmp_path, "cut", 10, children)
    _kill(proc)
    spool = stem.with_name("cut.spool")
    rows = spool_rows(spool)
    with open(spool / "actions.rows", "ab") as fh:  # half a row, as a kill in the middle of a write leaves it
        fh.write(b"\x01" * 50)
    with open(spool / "timestamps.rows", "ab") as fh:  # a row the other arrays never got
        fh.write(b"\x00" * 8)
    recover_segment(stem)
    data = _check_pair(stem)
    assert len(data["frames"]) == rows
    _check_frames_in_order(data)


def test_recovery_after_a_crash_between_the_renames(tmp_path, children):
    """Killed after `S.npz` was in place but before the mp4 was moved: recover finishes the rest."""
    proc, stem = _recording_child(tmp_path, "late", 10, children)
    _kill(proc)
    folder = stem.with_name("late.spool")
    lock = try_lock(folder, wait=10)
    spool = Spool.open(folder, lock)
    rows = spool.finish(stem.with_name("late.npz"), spool.metadata)
    spool.close()
    assert folder.is_dir() and not stem.with_name("late.mp4").exists()
    assert recover_segment(stem) == stem.with_name("late.npz")
    assert len(_check_pair(stem)["frames"]) == rows and not folder.exists()


def test_recovery_without_space_is_one_line_and_can_be_retried(tmp_path, children):
    proc, stem = _recording_child(tmp_path, "tight", 10, children)
    _kill(proc)
    spool = stem.with_name("tight.spool")
    rows = spool_rows(spool)
    result = _recover_command(stem, preexec_fn=lambda: _limit_file_size(64 << 10))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"cannot recover {stem} (file size limit reached)" in result.stderr
    assert f"recover {stem}` again" in result.stderr
    assert spool.is_dir() and spool_rows(spool) == rows
    result = _recover_command(stem)
    assert result.returncode == 0, result.stderr
    data = _check_pair(stem)
    assert len(data["frames"]) == rows
    _check_frames_in_order(data)


def test_encoder_failure_while_recording_reencodes_from_the_npz(tmp_path):
    writer = SegmentWriter(tmp_path / "enc", world="w", fps=20)
    frames = [make_frame(t, 64, 96) for t in range(40)]
    for t in range(20):
        writer.append(frames[t], np.full(2, t, np.float32))
    deadline = time.monotonic() + 30
    while spool_rows(tmp_path / "enc.spool") < 20:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(_encoder_pid(os.getpid()), signal.SIGKILL)
    for t in range(20, 40):
        writer.append(frames[t], np.full(2, t, np.float32))
        time.sleep(0.005)
    with pytest.raises(RecordingError) as exc:
        writer.close()
    message = str(exc.value)
    assert "ffmpeg could not write" in message and "\n" not in message
    data = _check_pair(tmp_path / "enc")
    kept = len(data["frames"])
    assert kept >= 20 and f"{kept} frames kept" in message
    np.testing.assert_array_equal(data["frames"], np.stack(frames[:kept]))
    assert read_recording(tmp_path / "enc.npz")["metadata"]["num_frames"] == kept


def test_a_spool_of_an_older_version_is_left_alone(tmp_path):
    spool = tmp_path / "old.spool"
    spool.mkdir()
    (spool / "metadata.json").write_text("{}")
    (spool / "chunk_000000.npz").write_bytes(b"frames of the chunked format")
    with pytest.raises(ConfigError, match="holds files this version does not write"):
        recover_segment(tmp_path / "old")
    assert (spool / "chunk_000000.npz").read_bytes() == b"frames of the chunked format"
