"""`launcher.py --headless`: a tiny Oasis world generates mp4 + npz; bad input gives one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

import launcher
from engine.actions.vpt import load_action_stream
from engine.core.loader import open_session
from engine.recordings import read_recording
from tests.conftest import PROJECT_ROOT
from tests.tiny_world import make_tiny_oasis_world


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory, oasis_dir) -> Path:
    return make_tiny_oasis_world(tmp_path_factory.mktemp("tiny"), oasis_dir)


@pytest.fixture(scope="module")
def action_file(oasis_dir) -> Path:
    return sorted((oasis_dir / "vpt").glob("*.actions.jsonl"))[0]


@pytest.fixture(scope="module")
def headless_run(tiny_world, action_file, tmp_path_factory) -> tuple[Path, int]:
    out = tmp_path_factory.mktemp("run") / "run.mp4"
    frames = 9
    result = subprocess.run(
        [sys.executable, "launcher.py", "--config", str(tiny_world), "--headless", "--device", "cpu",
         "--actions", str(action_file), "--action-offset", "5", "--frames", str(frames), "--seed", "3",
         "--out", str(out)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return out, frames


def test_headless_writes_mp4_and_npz(headless_run, action_file):
    out, frames = headless_run
    recording = read_recording(out.with_suffix(".npz"))
    assert recording["frames"].shape[0] == frames and recording["frames"].dtype == np.uint8
    assert recording["actions"].shape == (frames, 25) and recording["actions"].dtype == np.float32
    assert recording["poses"].shape == (frames, 5) and np.isnan(recording["poses"]).all()
    assert recording["timestamps"].dtype == np.float64 and np.all(np.diff(recording["timestamps"]) >= 0)
    meta = recording["metadata"]
    assert meta["world"] == "tiny-oasis" and meta["seed"] == 3 and meta["sampler"] == "cached"
    assert set(meta["checkpoint_sha256"]) == {"dit", "vae"}
    expected_actions = load_action_stream(action_file, frames, offset=5).numpy()
    np.testing.assert_array_equal(recording["actions"], expected_actions)
    video = iio.imread(out)
    assert video.shape == recording["frames"].shape


def test_headless_frames_equal_a_direct_session(headless_run, tiny_world, action_file):
    out, frames = headless_run
    recording = read_recording(out.with_suffix(".npz"))
    session = open_session(str(tiny_world), device="cpu", seed=3)
    actions = load_action_stream(action_file, frames, offset=5)
    expected = [session.prompt_frames()[0].numpy()]
    expected += [session.step(actions[j]).frame.numpy() for j in range(1, frames)]
    np.testing.assert_array_equal(recording["frames"], np.stack(expected))
    assert len({frame.tobytes() for frame in expected}) > 1


def test_reference_sampler_gives_the_same_frames(tiny_world):
    sessions = [open_session(str(tiny_world), device="cpu", sampler=kind, seed=1) for kind in ("cached", "reference")]
    action = torch.zeros(25)
    action[11] = 1.0
    for _ in range(6):
        cached, reference = (s.step(action).frame.int() for s in sessions)
        assert (cached - reference).abs().max() <= 1


@pytest.mark.parametrize(("argv", "message"), [
    (["--world", "no-such-world"], "unknown world 'no-such-world'"),
    (["--prompt", "missing.png"], "prompt missing.png does not exist"),
    (["--actions", "missing.jsonl"], "missing.jsonl"),
    (["--frames", "1"], "--frames 1 must exceed"),
])
def test_bad_input_gives_one_line_error(tiny_world, tmp_path, capsys, argv, message):
    if argv[0] != "--world":
        argv = ["--config", str(tiny_world), *argv]
    code = launcher.main([*argv, "--headless", "--device", "cpu", "--out", str(tmp_path / "x.mp4")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and len(err.splitlines()) == 1


def test_wrong_image_and_bad_action_file(tiny_world, tmp_path, capsys):
    fake = tmp_path / "fake.png"
    fake.write_text("not an image")
    bad_actions = tmp_path / "bad.jsonl"
    bad_actions.write_text('{"forward": 1}\n')
    for extra, name in ((["--prompt", str(fake)], "fake.png"), (["--actions", str(bad_actions)], "bad.jsonl")):
        code = launcher.main(["--config", str(tiny_world), "--headless", "--device", "cpu",
                              "--out", str(tmp_path / "x.mp4"), *extra])
        err = capsys.readouterr().err.strip()
        assert code == 2 and name in err and len(err.splitlines()) == 1


def _headless(tiny_world: Path, out: Path, config: Path | None = None) -> list[str]:
    return ["--config", str(config or tiny_world), "--headless", "--device", "cpu", "--frames", "3", "--out", str(out)]


def test_out_over_an_existing_recording_is_refused(tiny_world, tmp_path, capsys):
    for existing in ("old.mp4", "old.npz", "old.spool", "old-part2.npz"):
        folder = tmp_path / existing.replace(".", "_")
        folder.mkdir()
        (folder / existing).write_bytes(b"an older recording")
        code = launcher.main(_headless(tiny_world, folder / "old.mp4"))
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1
        assert f"{folder / existing} already exists; choose another --out" in err
        assert [p.name for p in folder.iterdir()] == [existing], "nothing written"
        assert (folder / existing).read_bytes() == b"an older recording"
    code = launcher.main(_headless(tiny_world, tmp_path))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "is a folder" in err


def test_out_over_a_killed_recordings_spool_names_the_recover_command(tiny_world, tmp_path, capsys):
    spool = tmp_path / "killed.spool"
    spool.mkdir()
    (spool / "rows-000000.npy").write_bytes(b"frames of a killed run")
    code = launcher.main(_headless(tiny_world, tmp_path / "killed.mp4"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert f"python -m engine.recordings recover {tmp_path / 'killed'}" in err and "killed.spool" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["killed.spool"], "nothing written"
    assert [p.name for p in spool.iterdir()] == ["rows-000000.npy"], "the spool is left as it was"


def test_world_name_that_is_a_path_is_refused(tiny_world, tmp_path, capsys):
    escape = tiny_world.with_name("escape.yaml")
    escape.write_text(tiny_world.read_text().replace("name: tiny-oasis", "name: ../../x"))
    out = tmp_path / "deep" / "er" / "run.mp4"
    code = launcher.main(_headless(tiny_world, out, escape))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "world name '../../x' cannot name a recordings folder" in err
    assert list(tmp_path.iterdir()) == [], "nothing written, no folder made"
