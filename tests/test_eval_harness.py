"""engine.eval on real recordings: an oracle that replays the real frames is perfect, copy-last scores what a
direct computation gives, revisits of a scripted out-and-back walk in the real game are found, and a dream
world goes through the whole protocol (table, JSON line, plot, side-by-side video)."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from engine.actions import doom as actions
from engine.core.config import load_world_config
from engine.core.loader import open_session
from engine.core.runner import Runner
from engine.eval.__main__ import main as eval_main
from engine.eval.metrics import PSNR_CAP_DB, psnr_per_frame
from engine.eval.revisits import find_revisits
from tests.doom_support import collect_recordings, tiny_doom_world

TURN_BACK = round(180 / actions.KEY_TURN_DEGREES)  # ticks of keyboard turning for a half turn


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    return collect_recordings(tmp_path_factory.mktemp("doom"), episodes=2, ticks=120, split="heldout")


def run_eval(capsys, *args: str) -> dict:
    assert eval_main(list(args)) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_replaying_the_real_frames_scores_the_cap(heldout, tmp_path, capsys):
    result = run_eval(capsys, "--world", "replay", "--data", str(heldout), "--horizons", "1,8", "--tf-frames", "20",
                      "--starts", "2", "--out", str(tmp_path))
    assert result["teacher_forced"]["world"]["psnr"] == PSNR_CAP_DB
    assert result["teacher_forced"]["world"]["ssim"] == pytest.approx(1.0)
    assert set(result["open_loop_psnr"]["world"].values()) == {PSNR_CAP_DB}


def test_copy_last_scores_the_direct_computation(heldout, tmp_path, capsys):
    result = run_eval(capsys, "--world", "copy-last", "--data", str(heldout), "--horizons", "1,8", "--tf-frames",
                      "20", "--starts", "2", "--no-memory-test", "--out", str(tmp_path))
    direct = []
    for path in sorted(heldout.glob("*.npz")):
        frames = np.load(path)["frames"]
        direct.append(np.minimum(psnr_per_frame(frames[31:51], frames[32:52]), PSNR_CAP_DB))
    expected = float(np.concatenate(direct).mean())
    assert result["teacher_forced"]["copy-last"]["psnr"] == pytest.approx(expected, abs=1e-6)
    assert result["teacher_forced"]["world"]["psnr"] == pytest.approx(expected, abs=1e-6)
    assert result["open_loop_psnr"]["world"] == result["open_loop_psnr"]["copy-last"]


def test_revisits_of_an_out_and_back_walk_in_the_real_game():
    session = open_session("doom-game", device="cpu")
    try:
        runner = Runner(session)
        walk, back = actions.encode(["forward"]), actions.encode([], actions.KEY_TURN_DEGREES)
        script = [walk] * 30 + [back] * TURN_BACK + [walk] * 30 + [back] * TURN_BACK + [walk] * 20
        poses = np.stack([session.pose.numpy(), *(runner.step(torch.from_numpy(a)).pose for a in script)])
    finally:
        session.close()
    found = find_revisits(poses, 31, max_distance=48.0, max_yaw_degrees=20.0)
    back_home = 1 + 30 + TURN_BACK + 30  # at the start point again, facing the other way
    assert found, "walking out, back and out again comes back to the first leg's places"
    first = found[0]
    # the return starts while turning round at the start point, once the view is within 20 degrees of the first
    # leg's, and sees what the first leg saw
    assert first.earlier <= 30 and back_home <= first.frame <= back_home + TURN_BACK
    assert first.frame - first.earlier > 31


def test_a_dream_world_goes_through_the_protocol(heldout, tmp_path, capsys):
    world = tiny_doom_world(tmp_path)
    result = run_eval(capsys, "--world", str(world), "--data", str(heldout), "--horizons", "1,4", "--tf-frames", "8",
                      "--starts", "1", "--out", str(tmp_path / "eval"))
    for condition in ("world", "shuffled actions", "copy-last"):
        assert np.isfinite(result["teacher_forced"][condition]["psnr"])
        assert set(result["open_loop_psnr"][condition]) == {"1", "4"}
    assert (tmp_path / "eval" / "psnr.png").stat().st_size > 1000
    video = np.stack(list(iio.imiter(tmp_path / "eval" / "side_by_side.mp4", plugin="FFMPEG")))
    assert video.shape[0] == 4 and video.shape[2] == 3 * video.shape[1] * 80 // 64
    assert result["revisits"]["count"] >= 0
    assert result["steps"] == load_world_config(str(world)).sampler.num_steps_denoising  # the world's own setting


def test_bad_arguments_are_one_line_errors(heldout, tmp_path, capsys):
    assert eval_main(["--world", "copy-last", "--data", str(tmp_path / "nothing")]) == 2
    assert eval_main(["--world", "copy-last", "--data", str(heldout), "--horizons", "one"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)
