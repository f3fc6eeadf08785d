"""The Doom dream (a tiny random world model here): the tick, pose memory on and off, real context for the
evaluation, headless runs from a recording, and `python -m engine.train --config doom` producing a world."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import launcher
from engine.actions import doom as actions
from engine.core.loader import open_session
from engine.core.noise import ReplayNoise
from engine.core.runner import Runner
from engine.families.diamond.denoiser import quantize
from engine.families.doom.network import DoomWorldModel, memory_pose_features
from engine.families.doom.world import DoomSampler
from engine.recordings import read_recording
from engine.train.config import load_train_config
from engine.train.trainer import train
from tests.doom_support import TINY_NETWORK, collect_recordings, tiny_doom_world

TURN_BACK = round(180 / actions.KEY_TURN_DEGREES)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return tiny_doom_world(tmp_path_factory.mktemp("dream"))


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    return collect_recordings(tmp_path_factory.mktemp("doom"), episodes=2, ticks=80)


def out_and_back() -> list[torch.Tensor]:
    walk, turn = actions.encode(["forward"]), actions.encode([], actions.KEY_TURN_DEGREES)
    return [torch.from_numpy(a) for a in [walk] * 20 + [turn] * TURN_BACK + [walk] * 20 + [turn] * TURN_BACK]


def test_a_tick_makes_a_frame_and_moves_the_pose(world):
    session = open_session(str(world), device="cpu")
    runner = Runner(session)
    start = session.pose.numpy().copy()
    for _ in range(8):
        tick = runner.step(torch.from_numpy(actions.encode(["forward"])))
    assert tick.frame.shape == (64, 80, 3) and tick.frame.dtype == np.uint8
    assert set(tick.stages_ms) == {"pose", "memory", "sample", "store"}
    yaw = np.radians(start[4])
    moved = tick.pose[[0, 2]] - start[[0, 2]]
    assert moved @ [np.sin(yaw), np.cos(yaw)] > 50, "walking forward goes along the view"
    assert abs(moved @ [np.cos(yaw), -np.sin(yaw)]) < 1e-3
    assert tick.extras["retrieved_frames"].shape == (TINY_NETWORK["memory"],)
    assert tick.hud_items[0].startswith("memory ")


def test_memory_recalls_the_frames_of_a_place_and_the_switch_turns_it_off(world):
    on = Runner(open_session(str(world), device="cpu"))
    off = Runner(open_session(str(world), device="cpu", overrides=["memory.enabled=false"]))
    ticks_on = [on.step(a) for a in out_and_back()]
    ticks_off = [off.step(a) for a in out_and_back()]
    last_on, last_off = ticks_on[-1], ticks_off[-1]
    recalled = [int(n) for n in last_on.extras["retrieved_frames"] if n >= 0]
    assert recalled and min(recalled) <= 20, "back at the start facing out again: the first leg's frames"
    assert len(last_on.hud_images) == len(recalled) and last_on.hud_images[0].shape == (64, 80, 3)
    assert (last_off.extras["retrieved_frames"] == -1).all() and not last_off.hud_images
    assert last_off.hud_items[0].startswith("memory off")
    assert not np.array_equal(last_on.frame, last_off.frame), "what is recalled changes the dream"


def test_memory_guidance_pushes_the_frame_away_from_the_memoryless_one_and_needs_a_recalled_frame():
    torch.manual_seed(1)
    model = DoomWorldModel(**TINY_NETWORK).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.05)
    size, n, m = TINY_NETWORK["frame_size"], TINY_NETWORK["context"], TINY_NETWORK["memory"]
    context, memory = torch.rand(1, 3 * n, *size) * 2 - 1, torch.rand(1, 3 * m, *size) * 2 - 1
    acts = torch.rand(1, n, TINY_NETWORK["action_dim"])
    poses = memory_pose_features(torch.zeros(5), torch.rand(m, 5) * 64, torch.tensor([True, False]), 256.0)[None]
    weight, draw = 2.0, torch.randn(1, 3, *size)
    cfg = OmegaConf.create({"num_steps_denoising": 1, "sigma_min": 0.002, "sigma_max": 5.0, "rho": 7,
                            "context_sigma": 0.1, "memory_guidance": weight})
    guided = DoomSampler(model, cfg, ReplayNoise(draw[None])).sample(context, memory, acts, poses)
    sigma, sigma_cond = torch.full((1,), 5.0), torch.full((1,), 0.1)
    with torch.no_grad():
        with_memory = model.denoise_unquantized(draw * 5.0, sigma, context, memory, acts, poses, sigma_cond)
        without = model.denoise_unquantized(draw * 5.0, sigma, context, torch.zeros_like(memory), acts,
                                            torch.zeros_like(poses), sigma_cond)
    expected = quantize(with_memory + weight * (with_memory - without))
    assert torch.allclose(guided, expected, atol=1e-5) and not torch.allclose(guided, quantize(with_memory))
    nothing_recalled = torch.zeros_like(poses)
    plain = DoomSampler(model, cfg, ReplayNoise(draw[None])).sample(context, torch.zeros_like(memory), acts,
                                                                nothing_recalled)
    assert torch.equal(plain, model.denoise(draw * 5.0, sigma, context, torch.zeros_like(memory), acts,
                                            nothing_recalled, sigma_cond)), "no recalled frame: one plain pass"


def test_real_context_and_teacher_forcing(world, recordings):
    data = read_recording(sorted(recordings.glob("*.npz"))[0])
    frames, acts, poses = (torch.from_numpy(data[k]) for k in ("frames", "actions", "poses"))
    session = open_session(str(world), device="cpu")
    session.start_from(frames[:30], acts[:30], poses[:30])
    assert len(session.bank) == 30 and torch.equal(session.pose, poses[29])
    made = session.step(acts[30]).frame
    assert made.shape == (64, 80, 3)
    session.force(frames[30], poses[30])
    assert torch.equal(session.pose, poses[30])
    context = session._frames.window(1)[0, 0]
    np.testing.assert_allclose(((context.permute(1, 2, 0) + 1) / 2 * 255).round().numpy(), data["frames"][30])


def test_headless_from_a_recording_continues_at_its_frame(world, recordings, tmp_path):
    source = sorted(recordings.glob("*.npz"))[0]
    out = tmp_path / "run.mp4"
    code = launcher.main(["--config", str(world), "--headless", "--device", "cpu", "--prompt", str(source),
                          "--actions", str(source), "--action-offset", "40", "--frames", "16", "--out", str(out)])
    assert code == 0
    run, real = read_recording(out.with_suffix(".npz")), read_recording(source)
    np.testing.assert_array_equal(run["frames"][0], real["frames"][40])
    np.testing.assert_array_equal(run["actions"][1:], real["actions"][41:56])
    np.testing.assert_allclose(run["poses"][0], real["poses"][40])
    assert run["retrieved_frames"].shape == (16, TINY_NETWORK["memory"])


def test_the_training_recipe_writes_a_playable_world(recordings, tmp_path):
    cfg = load_train_config("doom", [f"data.paths=[{recordings}]", f"output_dir={tmp_path / 'run'}",
                                     "train.steps=2", "train.batch_size=2", "train.checkpoint_every=2",
                                     "train.progress=false", *(f"model.world_model.{k}={v}" for k, v in
                                                                TINY_NETWORK.items() if k != "frame_size")])
    result = train(cfg)
    assert np.isfinite(result.losses).all() and result.world is not None
    session = open_session(str(result.world), device="cpu")
    assert session.step(torch.zeros(7)).frame.shape == (64, 80, 3)
