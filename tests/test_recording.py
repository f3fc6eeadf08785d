"""Recording segments: mp4 + npz contents, splitting, crash safety, signals and write errors."""

from __future__ import annotations

import errno
import inspect
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

import engine.recordings as recording
from engine.errors import ConfigError
from engine.recordings import RecordingError, SegmentWriter, read_recording, recover_segment
from tests.conftest import PROJECT_ROOT


def make_frame(t: int, height: int, width: int) -> np.ndarray:
    """Natural-ish frame t: smooth colour gradients, faint texture, a disc and a box with soft edges moving.

    Edges are blurred over ~12% of the height, as in camera or VAE-decoded frames: 4:2:0 chroma
    subsampling alone caps a sharp saturated edge at ~29 dB in a 64x96 frame.
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = xx / width, yy / height
    img = np.stack([120 + 90 * np.sin(3 * u + 0.15 * t), 110 + 80 * np.cos(2.5 * v - 0.1 * t),
                    100 + 60 * np.sin(4 * (u + v) + 0.05 * t)], -1)
    img += (6 * np.sin(40 * u) * np.sin(30 * v))[..., None]
    soft = 0.12 * height
    disc = np.clip((0.25 * height - np.hypot(xx - (0.2 + 0.02 * t) * width, yy - 0.5 * height)) / soft, 0, 1)
    box = (np.clip((0.15 * width - np.abs(xx - (0.8 - 0.015 * t) * width)) / soft, 0, 1)
           * np.clip((0.2 * height - np.abs(yy - 0.3 * height)) / soft, 0, 1))
    img = img * (1 - disc[..., None]) + disc[..., None] * np.array([200, 120, 90])
    img = img * (1 - box[..., None]) + box[..., None] * np.array([90, 120, 190])
    return np.clip(img, 0, 255).astype(np.uint8)


def _decode(path: Path) -> np.ndarray:
    return np.stack(list(iio.imiter(path, plugin="FFMPEG")))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def _check_pair(stem: Path) -> dict:
    """Both files of a part exist and hold the same frames in the same order; returns the npz contents."""
    data = read_recording(stem.with_name(stem.name + ".npz"))
    video = _decode(stem.with_name(stem.name + ".mp4"))
    assert video.shape == data["frames"].shape
    for decoded, exact in zip(video, data["frames"], strict=True):
        assert _psnr(decoded, exact) > 30
    return data


@pytest.mark.parametrize(("height", "width", "count"), [(64, 96, 40), (360, 640, 16)])
def test_roundtrip_mp4_and_npz(tmp_path: Path, height: int, width: int, count: int) -> None:
    frames = [make_frame(t, height, width) for t in range(count)]
    metadata = {"checkpoint_sha256": {"dit": "ab" * 32}, "ddim_steps": 10, "seed": 3, "backend": "eager"}
    with SegmentWriter(tmp_path / "run" / "demo.mp4", world="minecraft", fps=20, metadata=metadata) as writer:
        for t, frame in enumerate(frames):
            pose = None if t % 2 else [t, 64.0, -t, 10.0, 90.0 + t]
            writer.append(frame, np.full(25, t, np.float32), pose=pose, timestamp=0.05 * t,
                          extra={"memory_indices": np.arange(4, dtype=np.int64) + t})
    assert writer.parts == [tmp_path / "run" / "demo"]

    video = _decode(tmp_path / "run" / "demo.mp4")
    assert video.shape == (count, height, width, 3)
    psnr = [_psnr(v, f) for v, f in zip(video, frames, strict=True)]
    assert min(psnr) > 35, f"PSNR {min(psnr):.1f} dB"

    with np.load(tmp_path / "run" / "demo.npz") as raw:  # plain numpy, no pickles
        assert set(raw.files) == {"frames", "actions", "poses", "timestamps", "metadata", "memory_indices"}
        assert raw["frames"].dtype == np.uint8 and raw["frames"].shape == (count, height, width, 3)
        assert raw["actions"].dtype == np.float32 and raw["actions"].shape == (count, 25)
        assert raw["poses"].dtype == np.float32 and raw["poses"].shape == (count, 5)
        assert raw["timestamps"].dtype == np.float64 and raw["timestamps"].shape == (count,)
        assert raw["memory_indices"].dtype == np.int64 and raw["memory_indices"].shape == (count, 4)
        assert raw["metadata"].shape == () and raw["metadata"].dtype.kind == "U"

    data = read_recording(tmp_path / "run" / "demo.mp4")
    assert np.array_equal(data["frames"], np.stack(frames))
    assert np.array_equal(data["actions"][:, 0], np.arange(count, dtype=np.float32))
    assert np.isnan(data["poses"][1::2]).all() and not np.isnan(data["poses"][0::2]).any()
    assert np.array_equal(data["poses"][2], np.array([2, 64, -2, 10, 92], np.float32))
    assert np.array_equal(data["timestamps"], 0.05 * np.arange(count))
    meta = data["metadata"]
    assert meta["format"] == recording.FORMAT_NAME and meta["version"] == recording.FORMAT_VERSION
    assert meta["world"] == "minecraft" and meta["fps"] == 20 and meta["num_frames"] == count
    assert meta["frame_size"] == [height, width] and meta["action_dim"] == 25
    assert meta["part"] == 1 and meta["first_frame"] == 0 and meta["extra_keys"] == ["memory_indices"]
    assert {k: meta[k] for k in metadata} == metadata
    assert not (tmp_path / "run" / "demo.spool").exists()


def test_tensor_frames_and_default_timestamps(tmp_path: Path) -> None:
    chw = torch.from_numpy(make_frame(0, 36, 50)).permute(2, 0, 1).contiguous()
    writer = SegmentWriter(tmp_path / "t", world="w", fps=10)
    for _ in range(3):
        writer.append(chw.permute(1, 2, 0), torch.zeros(4))  # a non-contiguous view, as decode() returns
    writer.close()
    data = read_recording(tmp_path / "t.npz")
    assert np.array_equal(data["frames"][0], chw.permute(1, 2, 0).numpy())
    assert data["frames"].shape == (3, 36, 50, 3) and data["actions"].shape == (3, 4)
    assert np.all(np.diff(data["timestamps"]) >= 0) and data["timestamps"][0] >= 0
    assert _decode(tmp_path / "t.mp4").shape == (3, 36, 50, 3)


def test_recordings_folder_layout(tmp_path: Path) -> None:
    first = SegmentWriter(tmp_path, world="minecraft", fps=20)
    first.append(np.zeros((16, 16, 3), np.uint8), np.zeros(25))
    first.close()
    second = SegmentWriter.new_segment(tmp_path, "minecraft", 20)
    second.append(np.zeros((16, 16, 3), np.uint8), np.zeros(25))
    second.close()
    for writer in (first, second):
        stem = writer.parts[0]
        assert stem.parent == tmp_path / "minecraft"
        assert stem.with_name(stem.name + ".mp4").is_file() and stem.with_name(stem.name + ".npz").is_file()
    name = first.parts[0].name
    assert len(name) == 15 and name[8] == "-" and name.replace("-", "").isdigit()
    assert second.parts[0] != first.parts[0]


def test_split_at_max_bytes(tmp_path: Path) -> None:
    frames = [make_frame(t, 64, 96) for t in range(30)]
    writer = SegmentWriter(tmp_path / "long", world="w", fps=20, max_bytes=150_000)
    for t, frame in enumerate(frames):
        writer.append(frame, np.full(3, t, np.float32))
    parts = writer.close()
    assert len(parts) >= 3 and parts[0] == tmp_path / "long" and parts[1] == tmp_path / "long-part2"
    collected, first_frame = [], 0
    for number, stem in enumerate(parts, start=1):
        data = _check_pair(stem)
        assert data["metadata"]["part"] == number and data["metadata"]["first_frame"] == first_frame
        npz_bytes = stem.with_name(stem.name + ".npz").stat().st_size
        assert npz_bytes <= 150_000
        first_frame += len(data["frames"])
        collected.append(data["frames"])
    assert np.array_equal(np.concatenate(collected), np.stack(frames))


def test_append_does_not_wait_for_the_encoder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slow_write = recording.encoder.Encoder.write

    def write(self, frame):
        time.sleep(0.05)
        slow_write(self, frame)

    monkeypatch.setattr(recording.encoder.Encoder, "write", write)
    writer = SegmentWriter(tmp_path / "slow", world="w", fps=20, queue_frames=32)
    frame = make_frame(0, 32, 32)
    start = time.perf_counter()
    for _ in range(10):
        writer.append(frame, np.zeros(2))
    assert time.perf_counter() - start < 0.25
    writer.close()
    assert len(read_recording(tmp_path / "slow.npz")["frames"]) == 10


def test_append_checks_its_inputs(tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path / "v", world="w", fps=20)
    frame = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        writer.append(frame.astype(np.float32), np.zeros(2))
    writer.append(frame, np.zeros(2), extra={"ids": np.arange(2)})
    with pytest.raises(ValueError, match="'frames' of frame 1"):
        writer.append(np.zeros((8, 9, 3), np.uint8), np.zeros(2), extra={"ids": np.arange(2)})
    with pytest.raises(ValueError, match="'ids'"):
        writer.append(frame, np.zeros(2))
    with pytest.raises(ValueError, match="reserved"):
        writer.append(frame, np.zeros(2), extra={"frames": np.arange(2)})
    with pytest.raises(ValueError, match="pose"):
        writer.append(frame, np.zeros(2), pose=[1, 2, 3], extra={"ids": np.arange(2)})
    writer.close()
    with pytest.raises(RuntimeError, match="closed"):
        writer.append(frame, np.zeros(2), extra={"ids": np.arange(2)})
    assert len(read_recording(tmp_path / "v.npz")["frames"]) == 1


def test_disk_full_keeps_what_was_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_put, calls = recording.npzfile.FramesNpz.put, []

    def put(self, index, frame):
        calls.append(index)
        if len(calls) > 10:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
        real_put(self, index, frame)

    monkeypatch.setattr(recording.npzfile.FramesNpz, "put", put)
    writer = SegmentWriter(tmp_path / "full", world="w", fps=20)
    for t in range(30):
        writer.append(make_frame(t, 32, 48), np.zeros(2))
    with pytest.raises(RecordingError) as exc:
        writer.close()
    message = str(exc.value)
    assert "\n" not in message and "disk full" in message and str(tmp_path / "full") in message
    assert "10 frames kept" in message and "20 later frames were not recorded" in message
    assert writer.error is not None and writer.close() == [tmp_path / "full"]  # reported once
    assert len(_check_pair(tmp_path / "full")["frames"]) == 10


def test_a_new_recording_replaces_an_old_pair_whole(tmp_path: Path) -> None:
    """Until the new pair is complete the old one stays as it was; then both files are replaced together."""
    with SegmentWriter(tmp_path / "same", world="w", fps=20) as old:
        for t in range(12):
            old.append(make_frame(t, 32, 48), np.zeros(2))
    writer = SegmentWriter(tmp_path / "same", world="w", fps=20)
    for t in range(5):
        writer.append(make_frame(40 + t, 32, 48), np.ones(2))
    deadline = time.monotonic() + 30
    while spool_rows(tmp_path / "same.spool") < 5:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert len(_check_pair(tmp_path / "same")["frames"]) == 12
    writer.close()
    data = _check_pair(tmp_path / "same")
    assert len(data["frames"]) == 5 and (data["actions"] == 1).all()


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ".", "", ".hidden", "c:evil", "back\\slash", "nul\0"])
def test_world_names_that_are_not_one_folder_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(RecordingError, match="cannot name a recordings folder"):
        SegmentWriter(tmp_path, world=name, fps=20)
    with pytest.raises(RecordingError, match="cannot name a recordings folder"):
        recording.segment_stem(tmp_path, name)
    assert list(tmp_path.iterdir()) == []
    assert recording.check_world_name("atari-Breakout_2") == "atari-Breakout_2"


def test_read_recording_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        read_recording(tmp_path / "none.npz")
    (tmp_path / "junk.npz").write_text("junk")
    with pytest.raises(ConfigError, match="not a readable npz"):
        read_recording(tmp_path / "junk.npz")
    np.savez(tmp_path / "partial.npz", frames=np.zeros((1, 2, 2, 3), np.uint8))
    with pytest.raises(ConfigError, match="lacks 'actions'"):
        read_recording(tmp_path / "partial.npz")


CHILD = "import numpy as np\n" + inspect.getsource(make_frame) + textwrap.dedent('''
    import sys, time
    from engine.recordings import SegmentWriter, install_signal_finalizers

    install_signal_finalizers()
    writer = SegmentWriter(sys.argv[1], world="test", fps=20, metadata={"seed": 7})
    t = 0
    while True:
        writer.append(make_frame(t, 64, 96), np.full(25, t, np.float32), pose=[t, 0, 0, 0, 0])
        t += 1
        if t == 12:
            print("ready", flush=True)
        time.sleep(0.01)
''')


def _start_child(tmp_path: Path, stem: Path) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(stem)], cwd=PROJECT_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    return proc


def _check_frames_in_order(data: dict) -> None:
    count = len(data["frames"])
    assert np.array_equal(data["actions"][:, 0], np.arange(count, dtype=np.float32))
    assert np.array_equal(data["frames"][-1], make_frame(count - 1, 64, 96))


def test_sigterm_mid_segment_finalises_both_files(tmp_path: Path) -> None:
    stem = tmp_path / "term"
    proc = _start_child(tmp_path, stem)
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    data = _check_pair(stem)
    assert len(data["frames"]) >= 12 and data["metadata"]["seed"] == 7
    _check_frames_in_order(data)
    assert not stem.with_name("term.spool").exists()


SIGNALLED = textwrap.dedent("""
    import os, signal, threading, time
    from engine.recordings import install_signal_finalizers

    before = signal.getsignal(signal.SIGINT)
    restore = install_signal_finalizers()
    restore()
    assert signal.getsignal(signal.SIGINT) is before, "without a signal, restore() puts the handlers back"
    restore = install_signal_finalizers()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    finally:
        restore()
    os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl+C, while the program ends
    os.kill(os.getpid(), signal.SIGTERM)
    print("ignored", signal.getsignal(signal.SIGINT) is signal.SIG_IGN, flush=True)
    # the interpreter joins this thread at exit, before the atexit hooks: a signal then must not interrupt it
    threading.Thread(target=lambda: (time.sleep(0.3), os.kill(os.getpid(), signal.SIGINT))).start()
    raise SystemExit(130)
""")


def test_after_the_first_signal_the_next_ones_are_ignored_to_the_end(tmp_path: Path) -> None:
    script = tmp_path / "signalled.py"
    script.write_text(SIGNALLED)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run([sys.executable, str(script)], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 130, done.stderr
    assert done.stdout.split() == ["interrupted", "ignored", "True"], done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr


def spool_rows(spool: Path) -> int:
    """Rows a part's spool holds so far (its timestamps file has 8 bytes a row)."""
    try:
        return (spool / "timestamps.rows").stat().st_size // 8
    except OSError:
        return 0


def test_sigkill_keeps_every_encoded_frame(tmp_path: Path) -> None:
    stem = tmp_path / "kill"
    proc = _start_child(tmp_path, stem)
    spool = stem.with_name("kill.spool")
    deadline = time.monotonic() + 30
    while spool_rows(spool) < 15 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.kill()
    proc.communicate(timeout=60)
    with pytest.raises(ConfigError, match="was not finalised"):
        read_recording(stem.with_name("kill.npz"))
    rows = spool_rows(spool)
    assert rows >= 15
    npz = recover_segment(stem)
    data = _check_pair(stem)
    assert npz == stem.with_name("kill.npz") and len(data["frames"]) == rows
    assert data["metadata"]["recovered"] is True and data["metadata"]["num_frames"] == rows
    _check_frames_in_order(data)
    assert not spool.exists()
    assert data["metadata"]["world"] == "test" and data["metadata"]["seed"] == 7
