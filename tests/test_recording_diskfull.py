"""A full disk while recording, made portable with RLIMIT_FSIZE (writes past the limit fail with EFBIG):
the recording stops at the first failed write, every frame written so far stays in a readable pair, the
message says how many, and finishing needs no space beyond what the recording already held."""

from __future__ import annotations

import inspect
import json
import os
import re
import resource
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np

from engine.recordings import read_recording
from tests.conftest import PROJECT_ROOT
from tests.test_app_recording import mp4_frames
from tests.test_recording import make_frame

LIMIT = 1 << 20


def _limit_file_size(limit: int = LIMIT) -> None:
    """In a child before exec: writes past `limit` bytes fail with EFBIG instead of raising SIGXFSZ."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": "1", "PYGAME_HIDE_SUPPORT_PROMPT": "1"}


def _disk_bytes(*paths: Path) -> int:
    """Bytes the files under `paths` occupy on disk (allocated blocks)."""
    total = 0
    for path in paths:
        files = path.rglob("*") if path.is_dir() else [path]
        total += sum(f.stat().st_blocks * 512 for f in files if f.is_file())
    return total


def _kept(message: str) -> tuple[int, int]:
    """(frames kept, later frames not recorded) from a RecordingError message."""
    kept = int(re.search(r"(\d+) frames kept", message)[1])
    dropped = re.search(r"(\d+) later frames? (were|was) not recorded", message)
    return kept, int(dropped[1]) if dropped else 0


def _check_pair(stem: Path, kept: int) -> dict:
    data = read_recording(stem.with_name(stem.name + ".npz"))
    assert len(data["frames"]) == kept and data["metadata"]["num_frames"] == kept
    assert len(mp4_frames(stem.with_name(stem.name + ".mp4"))) == kept
    assert not stem.with_name(stem.name + ".spool").exists()
    return data


CHILD = "from pathlib import Path\nimport numpy as np\n" + inspect.getsource(make_frame) + inspect.getsource(_disk_bytes) + textwrap.dedent('''
    import json, resource, signal, sys, time
    from pathlib import Path
    from engine.recordings import RecordingError, SegmentWriter

    stem, limit = Path(sys.argv[1]), int(sys.argv[2])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    writer = SegmentWriter(stem, world="w", fps=20)
    appended = 0
    while writer.error is None and appended < 5000:
        writer.append(make_frame(appended % 50, 64, 96), np.full(3, appended, np.float32))
        appended += 1
    time.sleep(0.2)
    held = _disk_bytes(stem.with_name(stem.name + ".spool"))
    try:
        writer.close()
        message = ""
    except RecordingError as exc:
        message = str(exc)
    final = _disk_bytes(stem.with_name(stem.name + ".npz"), stem.with_name(stem.name + ".mp4"))
    print(json.dumps({"appended": appended, "message": message, "held": held, "final": final}))
''')


def test_writer_stops_at_the_size_limit_and_keeps_everything(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    stem = tmp_path / "full"
    result = subprocess.run([sys.executable, str(script), str(stem), str(LIMIT)], cwd=PROJECT_ROOT, env=_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    message = report["message"]
    assert "\n" not in message and "file size limit reached" in message and str(stem) in message
    kept, dropped = _kept(message)
    assert kept > 20 and kept + dropped == report["appended"]
    assert dropped <= 64 + 2, "the recording stopped at the first failed write"
    data = _check_pair(stem, kept)
    np.testing.assert_array_equal(data["frames"], np.stack([make_frame(t % 50, 64, 96) for t in range(kept)]))
    np.testing.assert_array_equal(data["actions"][:, 0], np.arange(kept, dtype=np.float32))
    assert stem.with_name("full.npz").stat().st_size <= LIMIT
    assert report["final"] <= report["held"] + (64 << 10), f"finishing took {report['final'] - report['held']} bytes"
    print(f"\nsize limit {LIMIT}: {kept} frames kept, {dropped} dropped; {report['held']} bytes held at the error, "
          f"{report['final']} after finishing; message: {message}")


def test_headless_run_ends_at_the_size_limit(world, tmp_path):
    out = tmp_path / "run.mp4"
    frames = 600
    result = subprocess.run(
        [sys.executable, "launcher.py", "--config", str(world), "--headless", "--device", "cpu",
         "--frames", str(frames), "--out", str(out)],
        cwd=PROJECT_ROOT, env=_env(), capture_output=True, text=True, timeout=300, preexec_fn=_limit_file_size)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "wrote" not in result.stdout
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: recording stopped (file size limit reached) while writing"), error
    kept, dropped = _kept(error)
    data = _check_pair(out.with_suffix(""), kept)
    assert kept > 0 and kept + dropped <= kept + 64 + 2 < frames, "generation stopped with the recording"
    assert out.with_suffix(".npz").stat().st_size <= LIMIT
    assert (np.diff(data["timestamps"]) >= 0).all()
    print(f"\nheadless at a {LIMIT}-byte limit: exit 2, {kept} frames kept of {frames} asked; {error}")


def test_player_keeps_playing_after_the_size_limit(display, world, tmp_path):
    recordings = tmp_path / "recordings"
    command = [sys.executable, "launcher.py", "--config", str(world), "--device", "cpu", "--record",
               "--recordings", str(recordings), "--window-size", "240x160", "--fps", "0"]
    player = subprocess.Popen(command, cwd=PROJECT_ROOT, env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, preexec_fn=_limit_file_size)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(player.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 90
        while not any(line.startswith("error: recording stopped") for line in lines):
            assert player.poll() is None, player.communicate()
            assert time.monotonic() < deadline, f"the recording never hit the limit: {lines}"
            time.sleep(0.05)
        time.sleep(1.0)
        assert player.poll() is None, "the player went on after the recording stopped"
        player.send_signal(signal.SIGTERM)
        _, err = player.communicate(timeout=60)
    finally:
        if player.poll() is None:
            player.kill()
    reader.join(timeout=10)
    assert player.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    error = next(line for line in lines if line.startswith("error: recording stopped")).strip()
    assert "file size limit reached" in error
    kept, _ = _kept(error)
    stems = sorted({path.with_suffix("") for path in (recordings / "tiny-oasis").iterdir()})
    assert len(stems) == 1, "one segment: recording stayed off after the error"
    _check_pair(stems[0], kept)
    assert stems[0].with_suffix(".npz").stat().st_size <= LIMIT
    print(f"\nplayer at a {LIMIT}-byte limit: {kept} frames kept, went on playing; {error}")
