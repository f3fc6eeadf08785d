"""Recording through the player (`,` and --record), SIGTERM mid-segment, --replay and --view."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import yaml

import launcher
from app.player import open_player
from engine.actions.vpt import ACTION_KEYS
from engine.errors import ConfigError
from engine.recordings import read_recording
from tests.conftest import PROJECT_ROOT
from tests.test_app_support import (
    TickLog,
    find_window,
    flat_patch_world,
    player_args,
    psnr,
    pump,
    xdotool,
)
from tests.test_recording import spool_rows

FORWARD = ACTION_KEYS.index("forward")


def mp4_frames(path: Path) -> list[np.ndarray]:
    reader = imageio_ffmpeg.read_frames(str(path))
    width, height = next(reader)["size"]
    return [np.frombuffer(data, np.uint8).reshape(height, width, 3) for data in reader]


def check_segment(npz: Path, world: Path) -> dict:
    """Schema of DESIGN.md, frames of the world's size, mp4 beside it with the same frames (PSNR > 35 dB);
    returns the recording."""
    vae = yaml.safe_load(world.read_text())["networks"]["vae"]
    with np.load(npz, allow_pickle=False) as raw:
        assert {"frames", "actions", "poses", "timestamps", "metadata"} <= set(raw.files)
    recording = read_recording(npz)
    frames, count = recording["frames"], len(recording["frames"])
    assert count > 0 and frames.dtype == np.uint8 and frames.shape[1:] == (vae["input_height"], vae["input_width"], 3)
    assert recording["actions"].shape == (count, len(ACTION_KEYS)) and recording["actions"].dtype == np.float32
    assert recording["poses"].shape == (count, 5) and np.isnan(recording["poses"]).all(), "Oasis has no pose"
    timestamps = recording["timestamps"]
    assert timestamps.dtype == np.float64 and timestamps[0] == 0 and (np.diff(timestamps) > 0).all()
    meta = recording["metadata"]
    assert meta["world"] == "tiny-oasis" and meta["num_frames"] == count and meta["fps"] == 20
    assert meta["seed"] == 0 and meta["sampler"] == "cached" and meta["ddim_steps"] == 3
    assert meta["backend"] == "eager" and meta["dtype"] == "fp32" and meta["device"] == "cpu"
    assert set(meta["checkpoint_sha256"]) == {"dit", "vae"}
    assert all(len(digest) == 64 for digest in meta["checkpoint_sha256"].values())
    video = mp4_frames(npz.with_suffix(".mp4"))
    assert len(video) == count
    worst = min(psnr(decoded, frame) for decoded, frame in zip(video, frames, strict=True))
    assert worst > 35, f"mp4 frames differ from the npz frames: worst PSNR {worst:.1f} dB"
    return recording


@pytest.fixture(scope="module")
def comma_recording(display, world, tmp_path_factory):
    """A segment recorded with `,` in the middle of play (w held for part of it), plus the ticks the
    model produced meanwhile."""
    recordings = tmp_path_factory.mktemp("recordings")
    with open_player(player_args(world, recordings, "--window-size", "240x160")) as player:
        log = TickLog()
        player.source.listeners.append(log)
        window = find_window()
        xdotool("windowfocus", window)
        pump(player, lambda: len(log.ticks) >= 5, what="ticks before recording")
        xdotool("key", "comma")
        pump(player, lambda: player.recorder.recording, what="recording on")
        started = len(log.ticks)
        xdotool("keydown", "w")
        pump(player, lambda: len(log.ticks) >= started + 12, what="recorded ticks")
        xdotool("keyup", "w")
        pump(player, lambda: len(log.ticks) >= started + 24, what="recorded ticks")
        xdotool("key", "comma")
        pump(player, lambda: not player.recorder.recording, what="recording off")
        stopped = len(log.ticks)
        pump(player, lambda: len(log.ticks) >= stopped + 3, what="ticks after recording")
    segments = sorted((recordings / "tiny-oasis").glob("*.npz"))
    return segments, log.ticks


def test_comma_records_a_segment_of_the_played_ticks(comma_recording, world):
    segments, ticks = comma_recording
    assert len(segments) == 1
    recording = check_segment(segments[0], world)
    frames = recording["frames"]
    first = next(i for i, tick in enumerate(ticks) if np.array_equal(tick.frame, frames[0]))
    played = ticks[first:first + len(frames)]
    assert 24 <= len(frames) <= len(ticks) - first - 3
    np.testing.assert_array_equal(frames, np.stack([t.frame for t in played]))
    np.testing.assert_array_equal(recording["actions"], np.stack([t.action.numpy() for t in played]))
    assert recording["actions"][:, FORWARD].sum() >= 10, "the held w key is in the recorded actions"
    before = np.asarray(recording["metadata"]["actions_before_segment"], dtype=np.float32)
    np.testing.assert_array_equal(before, np.stack([t.action.numpy() for t in ticks[:first]]))


def test_replay_reproduces_the_recorded_frames_exactly(display, world, comma_recording, tmp_path):
    segments, _ = comma_recording
    recording = read_recording(segments[0])
    args = player_args(world, tmp_path, "--window-size", "240x160", "--replay", str(segments[0]))
    with open_player(args) as player:
        log = TickLog()
        player.source.listeners.append(log)
        pump(player, lambda: player.source.finished, what="end of the replay")
        summary = player.hud_info().status
    skipped = len(recording["metadata"]["actions_before_segment"])
    replayed = np.stack([t.frame for t in log.ticks[skipped:]])
    np.testing.assert_array_equal(replayed, recording["frames"])
    assert f"{len(replayed)}/{len(replayed)} frames identical" in summary


def test_view_steps_through_npz_and_mp4(display, comma_recording, tmp_path):
    segments, _ = comma_recording
    frames = read_recording(segments[0])["frames"]
    for path in (segments[0], segments[0].with_suffix(".mp4")):
        args = player_args(Path("unused.yaml"), tmp_path, "--window-size", "240x160", "--view", str(path))
        with open_player(args) as player:
            source = player.source
            xdotool("windowfocus", find_window())
            pump(player, lambda: source.finished, what="end of the recording")  # noqa: B023
            last = player.shown
            xdotool("key", "Return", "key", "period")
            pump(player, lambda: source.paused and not source.finished, what="restarted, paused")  # noqa: B023
            paused_at = player.shown.frame_index
            xdotool("key", "e", "key", "e")
            pump(player, lambda: player.shown.frame_index == paused_at + 2, what="two single steps")  # noqa: B023
            stepped = player.shown
        assert last.frame_index == len(frames) - 1
        assert paused_at + 2 < len(frames) - 1
        for tick in (last, stepped):
            if path.suffix == ".npz":
                np.testing.assert_array_equal(tick.frame, frames[tick.frame_index])
            else:
                assert psnr(tick.frame, frames[tick.frame_index]) > 35


def test_sigterm_mid_segment_finalises_the_recording(display, world, tmp_path):
    recordings = tmp_path / "recordings"
    command = [sys.executable, str(PROJECT_ROOT / "launcher.py"), "--config", str(world), "--device", "cpu",
               "--record", "--recordings", str(recordings), "--window-size", "240x160"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    player = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        spool = recordings / "tiny-oasis"
        deadline = time.monotonic() + 60
        while not any(spool_rows(part) > 20 for part in spool.glob("*.spool")):  # segment still open
            assert player.poll() is None, player.communicate()
            assert time.monotonic() < deadline, "the player recorded nothing"
            time.sleep(0.1)
        player.send_signal(signal.SIGTERM)
        out, err = player.communicate(timeout=60)
    finally:
        if player.poll() is None:
            player.kill()
    assert player.returncode == 128 + signal.SIGTERM, err
    assert "recorded" in out, out
    segments = sorted(spool.glob("*.npz"))
    assert len(segments) == 1 and not any(spool.glob("*.spool")), "finalised: npz written, spool removed"
    recording = check_segment(segments[0], world)
    assert len(recording["frames"]) > 20
    assert json.loads(json.dumps(recording["metadata"]["actions_before_segment"])) == [], "recorded from launch"


def test_replay_needs_the_same_world(display, comma_recording, oasis_dir, tmp_path):
    other = flat_patch_world(tmp_path / "other", oasis_dir)
    other.write_text(other.read_text().replace("name: tiny-oasis", "name: another-world"))
    segments, _ = comma_recording
    args = player_args(other, tmp_path, "--replay", str(segments[0]))
    with pytest.raises(ConfigError, match="was recorded in world 'tiny-oasis', not 'another-world'"), open_player(args):
        pass


def test_world_name_that_is_a_path_is_refused(display, world, tmp_path, capsys):
    """`name: ../../x` would put recordings outside --recordings: the player refuses it before playing."""
    escape = world.with_name("escape.yaml")
    escape.write_text(world.read_text().replace("name: tiny-oasis", "name: ../../x"))
    recordings = tmp_path / "a" / "b" / "recordings"
    code = launcher.main(["--config", str(escape), "--device", "cpu", "--record", "--recordings", str(recordings),
                          "--window-size", "240x160"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "world name '../../x' cannot name a recordings folder" in err
    assert list(tmp_path.iterdir()) == [], "nothing written"
