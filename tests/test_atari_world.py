"""The atari world (DIAMOND Atari-100k): checkpoints, keymap, the session's tick against the reference fixtures
and the reference `WorldModelEnv.step`, agent mode, a headless run from a real ALE spawn, the hub download.

Fixture-size networks come from `atari_agent.safetensors` + `.json`, full-size shapes from
`manifest_atari_agent.json`; tolerances follow the fixture README.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import ale_py
import gymnasium as gym
import imageio.v3 as iio
import numpy as np
import pytest
import torch
import yaml
from gymnasium.wrappers import AtariPreprocessing
from omegaconf import OmegaConf
from safetensors.torch import load_file

import launcher
from app.inference import InferenceLoop
from app.recorder import Recorder
from app.replay import ReplaySource, load_replay
from engine.actions.atari import GAME_ACTIONS, env_id, minimal_action_names, one_hot
from engine.actions.keymap import Keymap
from engine.actions.vpt import ACTION_KEYS, CAMERA_KEYS
from engine.checkpoints.__main__ import main as checkpoints_cli
from engine.core.config import load_world_config
from engine.core.loader import load_networks, open_session
from engine.core.noise import ReplayNoise, SeededNoise
from engine.errors import CheckpointError, ConfigError
from engine.families.diamond.agent import policy_action
from engine.families.diamond.atari import (
    OUTCOME_STREAM,
    POLICY_STREAM,
    AtariSession,
    check_official_configs,
    stream_seed,
    to_uint8,
)
from engine.families.diamond.edm import EdmSamplerConfig, sample_reference
from engine.recordings import read_recording
from tests.conftest import PROJECT_ROOT, euler_case, read_json
from tests.hub_server import FakeHub
from tests.test_app_loop import wait_until
from tests.test_app_support import TickLog
from tests.test_diamond_models import assert_quantized_close

ROLES = ("denoiser", "rew_end_model", "actor_critic")
RAW = {"atol": 1e-5, "rtol": 1e-5}
REPO = "eloialonso/diamond"


def fixture_game(meta: dict) -> str:
    """An Atari-100k game whose minimal action set has the fixture agent's number of actions."""
    return next(game for game, names in GAME_ACTIONS.items() if len(names) == meta["num_actions"])


def tiny_world_config(diamond_dir: Path, weights: str | None = None, with_configs: bool = False) -> dict:
    """The shipped atari world with the fixture agent's sizes; weights default to the fixture safetensors."""
    meta = read_json(diamond_dir / "atari_agent.json")
    agent = meta["agent_config"]
    cfg = OmegaConf.to_container(load_world_config("atari"))
    for key in ("source_dir",):
        cfg.pop(key)
    cfg |= {"name": "tiny-atari", "game": fixture_game(meta), "env": {**cfg["env"], "size": meta["img_size"]}}
    cfg["checkpoints"]["files"] = dict.fromkeys(ROLES, weights or str(diamond_dir / "atari_agent.safetensors"))
    if not with_configs:
        del cfg["checkpoints"]["configs"]
    denoiser = agent["denoiser"]
    cfg["networks"] = {
        "denoiser": {"game": "${game}", "sigma_data": denoiser["sigma_data"],
                     "sigma_offset_noise": denoiser["sigma_offset_noise"],
                     "inner_model": {k: v for k, v in denoiser["inner_model"].items() if k != "num_actions"}},
        **{role: {"game": "${game}", **{k: v for k, v in agent[role].items() if k != "num_actions"}}
           for role in ("rew_end_model", "actor_critic")}}
    return cfg


@pytest.fixture(scope="module")
def tiny_world(diamond_dir, tmp_path_factory) -> Path:
    return write_tiny_world(tmp_path_factory.mktemp("tiny-atari"), diamond_dir)


def write_tiny_world(folder: Path, diamond_dir: Path) -> Path:
    path = folder / "tiny_atari.yaml"
    path.write_text(yaml.safe_dump(tiny_world_config(diamond_dir), sort_keys=False))
    return path


@pytest.fixture(scope="module")
def tiny(tiny_world, diamond_dir) -> dict:
    """The tiny world's config (sampler: the fixture's Euler case) and its networks, loaded as a session loads them."""
    cfg = load_world_config(tiny_world)
    cases = read_json(diamond_dir / "atari_sampler_io.json")["cases"]
    cfg.sampler = cases[euler_case(cases)]["sampler_config"]
    files = {role: Path(cfg.checkpoints.files[role]) for role in ROLES}
    return {"cfg": cfg, "networks": load_networks(cfg, files, torch.device("cpu"), torch.float32)}


def session_on(tiny: dict, frames: torch.Tensor, actions: torch.Tensor, **kwargs) -> AtariSession:
    return AtariSession(tiny["cfg"], tiny["networks"], frames, actions, **kwargs)


# -- keymap -----------------------------------------------------------------------------------------------


def test_keymap_follows_diamond_play_mode():
    pressed = {"d", "space"}
    breakout = Keymap.load("atari", action_space="atari/Breakout")
    assert breakout.action_keys == ("noop", "fire", "right", "left")
    assert breakout.to_action(pressed, (), 0, 0).tolist() == [0, 1, 0, 0]  # no rightfire: the first 1-key combo
    assert breakout.to_action(set(), (), 0, 0).tolist() == [1, 0, 0, 0]
    assert breakout.to_action({"a", "w"}, (), 0, 0).tolist() == [0, 0, 0, 1]
    pong = Keymap.load("atari", action_space="atari/Pong")
    assert pong.action_keys[int(pong.to_action(pressed, (), 0, 0).argmax())] == "rightfire"
    alien = Keymap.load("atari", action_space="atari/Alien")
    assert alien.action_keys[int(alien.to_action({"w", "a", "space", "x"}, (), 0, 0).argmax())] == "upleftfire"
    with pytest.raises(ConfigError, match="maps to action space vpt, the world's is atari/Pong"):
        Keymap.load("minecraft", action_space="atari/Pong")


def test_user_keymap_extends_atari(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("extends: atari\ncombos: {space: null, f: fire, 'k + l': rightfire}\n")
    keymap = Keymap.load(path, action_space="atari/Pong")
    assert keymap.action_keys[int(keymap.to_action({"space"}, (), 0, 0).argmax())] == "noop"
    assert keymap.action_keys[int(keymap.to_action({"k", "l"}, (), 0, 0).argmax())] == "rightfire"
    path.write_text("extends: atari\ncombos: {'w+d': upright}\n")
    with pytest.raises(ConfigError, match=r"combos.'w\+d': 'w\+d' is not a pygame key name"):
        Keymap.load(path)


# -- checkpoints ------------------------------------------------------------------------------------------


def full_size_state(manifest: dict, num_actions: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with the official key names and shapes, num_actions-dependent rows resized."""
    generator = torch.Generator().manual_seed(seed)
    dependent = set(manifest["keys_depending_on_num_actions"])
    state = {}
    for key, entry in manifest["keys"].items():
        shape = list(entry["shape"])
        if key in dependent:
            shape[0] = num_actions
        state[key] = torch.randn(shape, generator=generator)
    return state


@pytest.fixture(scope="module")
def full_size_files(diamond_dir, tmp_path_factory) -> dict[str, Path]:
    """torch.save of one flat mapping, like the official `atari_100k/models/<Game>.pt`."""
    manifest = read_json(diamond_dir / "manifest_atari_agent.json")
    folder = tmp_path_factory.mktemp("full-size-atari")
    files = {}
    for game in ("Breakout", "Alien"):
        files[game] = folder / game / f"{game}.pt"
        files[game].parent.mkdir()
        torch.save(full_size_state(manifest, len(minimal_action_names(game))), files[game])
    return files


def verify(capsys, *args: str | Path) -> tuple[int, str]:
    """`python -m engine.checkpoints verify ARGS`, in this process: (exit code, stdout)."""
    capsys.readouterr()
    code = checkpoints_cli(["verify", *map(str, args)])
    return code, capsys.readouterr().out


def test_full_size_checkpoint_loads_strictly_into_all_three_roles(full_size_files, capsys):
    path = full_size_files["Breakout"]
    cfg = load_world_config("atari")
    networks = load_networks(cfg, dict.fromkeys(ROLES, path), torch.device("cpu"), torch.float32)
    state = torch.load(path, weights_only=True)
    for role, module in networks.items():
        own = module.state_dict()
        assert len(own) == sum(key.startswith(f"{role}.") for key in state)
        for key, value in own.items():
            assert torch.equal(value, state[f"{role}.{key}"]), key
    # the random Fourier frequencies are a buffer of the checkpoint, never re-drawn
    assert torch.equal(networks["denoiser"].inner_model.noise_emb.weight, state["denoiser.inner_model.noise_emb.weight"])

    code, out = verify(capsys, "atari", path)  # one bare path: the three roles that share the file take it
    assert code == 0, out
    lines = out.splitlines()
    assert len(lines) == 3 and all(line.startswith(f"ok: {path} (") for line in lines)


def test_mismatched_checkpoint_is_a_one_line_error(full_size_files, diamond_dir, capsys):
    """Alien's checkpoint (18 actions) in the Breakout world (4): the error names the keys and both shapes
    (the manifest's, with the num_actions rows of each game)."""
    manifest = read_json(diamond_dir / "manifest_atari_agent.json")
    counts = {game: len(minimal_action_names(game)) for game in ("Breakout", "Alien")}

    def shapes(key: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(expected in the Breakout world, found in Alien's file)"""
        rest = tuple(manifest["keys"][key]["shape"][1:])
        return (counts["Breakout"], *rest), (counts["Alien"], *rest)

    path = full_size_files["Alien"]
    cfg = load_world_config("atari")
    with pytest.raises(CheckpointError) as info:
        load_networks(cfg, dict.fromkeys(ROLES, path), torch.device("cpu"), torch.float32)
    message = str(info.value)
    assert "\n" not in message
    assert f"checkpoint {path} does not fit Denoiser" in message
    assert "inner_model.act_emb.0.weight: expected {}, found {}".format(
        *shapes("denoiser.inner_model.act_emb.0.weight")) in message

    code, out = verify(capsys, "atari", path, "--game", "Breakout")
    assert code == 1
    assert f"{path} does not fit Denoiser (role denoiser): 1 problem" in out
    assert "  wrong shape actor_linear.weight: expected {}, found {}".format(
        *shapes("actor_critic.actor_linear.weight")) in out
    assert "  wrong shape act_emb.weight: expected {}, found {}".format(*shapes("rew_end_model.act_emb.weight")) in out
    networks = load_networks(load_world_config("atari", ["game=Alien"]), dict.fromkeys(ROLES, path),
                             torch.device("cpu"), torch.float32)
    assert networks["actor_critic"].actor_linear.out_features == counts["Alien"]
    code, out = verify(capsys, "atari", path)  # DIAMOND's file name atari_100k/models/Alien.pt says the game
    assert code == 0 and out.splitlines()[0].startswith("world 'atari' with game=Alien (from the file name"), out
    assert out.count(f"ok: {path} (") == 3


# -- the tick against the reference ---------------------------------------------------------------------------


def test_tick_equals_the_fixture_sampler_step(tiny, diamond_dir):
    """Spawn = the fixture's conditioning frames/actions (batch element 0); one tick with the fixture's last
    action and its recorded initial noise gives the fixture's Euler sample, with both samplers."""
    io = load_file(diamond_dir / "atari_sampler_io.safetensors")
    cases = read_json(diamond_dir / "atari_sampler_io.json")["cases"]
    name = euler_case(cases)
    case = cases[name]
    assert EdmSamplerConfig.from_dict(tiny["cfg"].sampler) == EdmSamplerConfig.from_dict(case["sampler_config"])
    frames, actions = io["prev_obs"][0], io["prev_act"][0]
    draws = torch.stack([io[f"{name}.rand_{i:02d}"][:1] for i in range(len(case["random_draws"]))])
    for sampler in ("cached", "reference"):
        session = session_on(tiny, frames, actions, sampler=sampler, noise=ReplayNoise(draws))
        frame = session.step(one_hot(int(actions[-1]), session.action_dim)).frame
        newest = session.newest_frame()
        assert_quantized_close(newest, io[f"{name}.output"][:1])
        assert (frame.int() - to_uint8(io[f"{name}.output"][0]).int()).abs().max() <= 1
        window, acts = session.window()
        assert torch.equal(window[0, :-1], frames[1:]) and torch.equal(acts[0, :-2], actions[1:-1])


def test_burn_in_equals_the_fixture(tiny, diamond_dir):
    """A spawn segment of the fixture's burn-in frames leaves the reward/end LSTM in the fixture's state."""
    io = load_file(diamond_dir / "atari_rew_end_io.safetensors")
    frames = torch.cat([io["burnin.obs"][0], io["burnin.next_obs"][0, -1:]])
    actions = torch.cat([io["burnin.act"][0], torch.zeros(1, dtype=torch.int64)])
    session = session_on(tiny, frames, actions)
    hx, cx = session.rew_end_state
    torch.testing.assert_close(hx, io["burnin.hx"][:, :1], **RAW)
    torch.testing.assert_close(cx, io["burnin.cx"][:, :1], **RAW)
    assert torch.equal(session.newest_frame()[0], io["step.obs"][0, 0])
    assert session.prompt_frames().shape == (len(frames), *frames.shape[-2:], 3)


@pytest.mark.parametrize("agent", [False, True])
def test_ticks_equal_the_reference_world_model_env(tiny, diamond_dir, agent):
    """Several ticks of the session (ring buffer, fast sampler) against `WorldModelEnv.step` as the reference
    writes it (rolled buffers, plain sampler), with the same seeded draws; in agent mode the actor-critic picks
    every action from the newest frame, whatever the input. The play loop's frame is the reference's within one
    8-bit level (README); the reference then goes on from the session's frame, so that a one-level flip of one
    tick does not feed the next, and the sampled rewards, ends, states and actions are compared exactly."""
    io = load_file(diamond_dir / "atari_sampler_io.safetensors")
    frames, actions, seed = io["prev_obs"][1], io["prev_act"][1], 11
    nets = tiny["networks"]
    session = session_on(tiny, frames, actions, seed=seed, agent=agent)
    num_actions = session.action_dim

    obs_buf, act_buf = frames[None].clone(), actions[None].clone()
    noise, cfg = SeededNoise(seed), session.settings
    outcome_rng = torch.Generator().manual_seed(stream_seed(seed, OUTCOME_STREAM))
    policy_rng = torch.Generator().manual_seed(stream_seed(seed, POLICY_STREAM))
    agent_state, returns = None, 0
    inputs = torch.randint(num_actions, (6,), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        *_, state = nets["rew_end_model"].predict_rew_end(obs_buf[:, :-1], act_buf[:, :-1], obs_buf[:, 1:])
        for tick, chosen in enumerate(inputs):
            if agent:
                logits, value, agent_state = nets["actor_critic"].predict_act_value(obs_buf[:, -1], agent_state)
                chosen = policy_action(logits, policy_rng)
            act_buf[:, -1] = chosen
            next_obs, _ = sample_reference(nets["denoiser"].denoise, obs_buf, act_buf, cfg, noise)
            frame = session.step(one_hot(int(inputs[tick]), num_actions)).frame
            assert (frame.int() - to_uint8(next_obs[0]).int()).abs().max() <= 1, tick
            next_obs = session.newest_frame().clone()
            assert torch.equal(frame, to_uint8(next_obs[0]))
            logits_rew, logits_end, state = nets["rew_end_model"].predict_rew_end(
                obs_buf[:, -1:], act_buf[:, -1:], next_obs[:, None], state)
            reward = policy_action(logits_rew[:, -1], outcome_rng) - 1
            end = policy_action(logits_end[:, -1], outcome_rng)
            returns += int(reward)
            obs_buf, act_buf = obs_buf.roll(-1, dims=1), act_buf.roll(-1, dims=1)
            obs_buf[:, -1] = next_obs

            assert torch.equal(session.window()[0], obs_buf)
            assert torch.equal(session.last_action, one_hot(int(chosen), num_actions))
            assert (int(session.reward), int(session.end), int(session.episode_return)) == (int(reward), int(end), returns)
            assert all(torch.equal(a, b) for a, b in zip(session.rew_end_state, state, strict=True))
            if agent:
                assert torch.equal(session.value, value)
    assert session.frame_index == len(frames) + len(inputs)
    hud = session.hud_items()
    assert hud[0].startswith(f"{session.game} · {'agent' if agent else 'you'}: ")
    assert f"return {returns:+d}" in hud[1]
    session.reset()
    assert torch.equal(session.window()[0], frames[None]) and session.frame_index == len(frames)


# -- episodes ---------------------------------------------------------------------------------------------


def test_the_player_restarts_the_episode_at_its_horizon(tiny, diamond_dir):
    """As DIAMOND's play loop: after `episode.horizon` ticks the world goes back to its spawn segment."""
    io = load_file(diamond_dir / "atari_sampler_io.safetensors")
    frames, actions = io["prev_obs"][1], io["prev_act"][1]
    cfg = tiny["cfg"].copy()
    cfg.episode = {"horizon": 3, "reset_on_end": False}
    session = session_on({**tiny, "cfg": cfg}, frames, actions, seed=1)
    log = TickLog()
    loop = InferenceLoop(session, lambda: (torch.zeros(session.action_dim), time.perf_counter()),
                         listeners=[log]).start()
    try:
        wait_until(lambda: log.resets >= 2)
    finally:
        loop.stop()
    start = len(frames)
    assert [tick.frame_index for tick in log.ticks[:6]] == [start + 1, start + 2, start + 3] * 2
    assert session.hud_items()[-1].startswith("episode tick ") and session.hud_items()[-1].endswith("/3")


def test_a_predicted_end_is_over_only_with_reset_on_end(tiny, diamond_dir):
    io = load_file(diamond_dir / "atari_sampler_io.safetensors")
    for reset_on_end in (True, False):
        cfg = tiny["cfg"].copy()
        cfg.episode = {"horizon": 0, "reset_on_end": reset_on_end}
        session = session_on({**tiny, "cfg": cfg}, io["prev_obs"][1], io["prev_act"][1])
        session.step(one_hot(0, session.action_dim))
        assert not session.episode_over() or bool(session.end)
        session.end = torch.ones(1, dtype=torch.int64)
        assert session.episode_over() is reset_on_end
        assert session.metadata()["episode"] == {"horizon": 0, "reset_on_end": reset_on_end}


@pytest.mark.parametrize("episode, problem", [({"horizon": -1}, "episode.horizon must be 0"),
                                               ({"length": 5}, "episode.length is unknown")])
def test_bad_episode_settings_are_one_line_errors(tiny, diamond_dir, episode, problem):
    io = load_file(diamond_dir / "atari_sampler_io.safetensors")
    cfg = tiny["cfg"].copy()
    cfg.episode = episode
    with pytest.raises(ConfigError, match=problem) as err:
        session_on({**tiny, "cfg": cfg}, io["prev_obs"][1], io["prev_act"][1])
    assert "\n" not in str(err.value)


# -- headless run from the real emulator ------------------------------------------------------------------


def run_launcher(*args: str | Path, env: dict | None = None) -> subprocess.CompletedProcess:
    env = (env or os.environ) | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run([sys.executable, "launcher.py", *map(str, args)], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_headless_run_from_a_real_ale_spawn(tiny_world, tmp_path):
    cfg = load_world_config(tiny_world)
    num_actions, frames, seed = len(minimal_action_names(cfg.game)), 9, 3
    rows = np.eye(num_actions, dtype=np.float32)[np.arange(frames) % num_actions]
    np.savez(tmp_path / "actions.npz", actions=rows)
    out = tmp_path / "run.mp4"
    code = launcher.main(["--config", str(tiny_world), "--headless", "--device", "cpu", "--frames", str(frames),
                          "--seed", str(seed), "--set", "spawn.policy=noop", "--actions", str(tmp_path / "actions.npz"),
                          "--out", str(out)])
    assert code == 0
    recording = read_recording(out.with_suffix(".npz"))
    size = int(cfg.env.size)
    assert recording["frames"].shape == (frames, size, size, 3) and recording["frames"].dtype == np.uint8
    np.testing.assert_array_equal(recording["actions"], rows)
    meta = recording["metadata"]
    assert meta["world"] == "tiny-atari" and meta["game"] == cfg.game and meta["seed"] == seed
    assert meta["spawn"]["policy"] == "noop" and set(meta["checkpoint_sha256"]) == set(ROLES)
    assert iio.imread(out).shape == recording["frames"].shape

    # the spawn frames are the real game's, preprocessed as gymnasium's AtariPreprocessing (RGB) does
    gym.register_envs(ale_py)
    real = AtariPreprocessing(gym.make(env_id(cfg.game), full_action_space=False, frameskip=1,
                                       repeat_action_probability=0.0),
                              noop_max=30, frame_skip=4, screen_size=size, grayscale_obs=False)
    steps = int(cfg.networks.denoiser.inner_model.num_steps_conditioning)
    context = [real.reset(seed=seed)[0]] + [real.step(0)[0] for _ in range(steps - 1)]
    real.close()
    np.testing.assert_array_equal(recording["frames"][:steps], np.stack(context))

    session = open_session(tiny_world, device="cpu", seed=seed, overrides=["spawn.policy=noop"])
    expected, episodes, episode = [], [0] * steps, 0
    for j in range(steps, frames):  # a predicted end restarts the episode, as in the player
        expected.append(session.step(torch.from_numpy(rows[j])).frame.numpy())
        episodes.append(episode)
        if session.episode_over():
            session.reset()
            episode += 1
    np.testing.assert_array_equal(recording["frames"][steps:], np.stack(expected))
    np.testing.assert_array_equal(recording["episode"], episodes)



def test_headless_rejects_vpt_actions(tiny_world, tmp_path, capsys):
    jsonl = tmp_path / "vpt.jsonl"
    idle = {key: 0 for key in ACTION_KEYS if key not in CAMERA_KEYS} | {"camera": [40, 40]}
    jsonl.write_text((json.dumps(idle) + "\n") * 6)
    code = launcher.main(["--config", str(tiny_world), "--headless", "--device", "cpu", "--frames", "6",
                          "--actions", str(jsonl), "--out", str(tmp_path / "bad.mp4")])
    assert code == 2
    num_actions = len(minimal_action_names(load_world_config(tiny_world).game))
    assert capsys.readouterr().err.strip() == (f"error: action file {jsonl} has 25 columns, world 'tiny-atari' "
                                               f"takes {num_actions} (VPT .jsonl files are for the Minecraft worlds)")
    assert not (tmp_path / "bad.mp4").exists()


# -- download from the hub ---------------------------------------------------------------------------------


def official_configs(meta: dict, game: str, sigma_data: float | None = None) -> dict[str, bytes]:
    """The agent and env yamls in the layout of `atari_100k/config/` (interpolations included)."""
    agent = meta["agent_config"]
    denoiser = {"_target_": "models.diffusion.DenoiserConfig", "sigma_data": sigma_data or agent["denoiser"]["sigma_data"],
                "sigma_offset_noise": agent["denoiser"]["sigma_offset_noise"],
                "inner_model": {k: v for k, v in agent["denoiser"]["inner_model"].items() if k != "num_actions"}}
    heads = {role: {**{k: v for k, v in agent[role].items() if k != "num_actions"},
                    "img_channels": "${agent.denoiser.inner_model.img_channels}", "img_size": "${env.train.size}"}
             for role in ("rew_end_model", "actor_critic")}
    env = {"train": {"id": env_id(game), "done_on_life_loss": True, "size": meta["img_size"], "max_episode_steps": None},
           "test": {"id": "${..train.id}", "done_on_life_loss": False, "size": "${..train.size}"},
           "keymap": "atari/${.train.id}"}
    return {"atari_100k/config/agent/default.yaml": yaml.safe_dump({"denoiser": denoiser, **heads}).encode(),
            "atari_100k/config/env/atari.yaml": yaml.safe_dump(env).encode()}


def hub_env(hf_home: Path, endpoint: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_") and "proxy" not in k.lower()}
    return env | {"HF_HOME": str(hf_home), "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
                  "NO_PROXY": "127.0.0.1,localhost", "HF_ENDPOINT": endpoint}


@pytest.fixture(scope="module")
def hub_world(diamond_dir, tmp_path_factory) -> tuple[Path, dict]:
    """A world whose checkpoint and config yamls exist only on the (stand-in) hub, and their contents."""
    folder = tmp_path_factory.mktemp("hub-atari")
    meta = read_json(diamond_dir / "atari_agent.json")
    game = fixture_game(meta)
    checkpoint = folder / "agent.pt"
    torch.save(load_file(diamond_dir / "atari_agent.safetensors"), checkpoint)
    world = folder / "world" / "hub_atari.yaml"
    world.parent.mkdir()
    world.write_text(yaml.safe_dump(tiny_world_config(diamond_dir, weights=f"atari_100k/models/{game}.pt",
                                                      with_configs=True), sort_keys=False))
    files = {(REPO, f"atari_100k/models/{game}.pt"): checkpoint.read_bytes()}
    return world, files | {(REPO, name): data for name, data in official_configs(meta, game).items()}


def test_checkpoint_and_configs_come_from_the_hub(hub_world, tmp_path):
    """The world names `atari_100k/models/${game}.pt`: fetched once for its three networks, with the config yamls."""
    world, files = hub_world
    with FakeHub(files) as hub:
        done = run_launcher("--config", world, "--headless", "--device", "cpu", "--frames", 5, "--out",
                            tmp_path / "hub.mp4", env=hub_env(tmp_path / "hf", hub.url))
        fetched = [path for method, path, _ in hub.requests if method == "GET"]
    assert done.returncode == 0, done.stderr
    checkpoint = next(name for _, name in files if name.endswith(".pt"))
    assert sum(path.endswith(f"/{checkpoint}") for path in fetched) == 1
    assert sum(path.endswith(".yaml") for path in fetched) == 2
    assert read_recording(tmp_path / "hub.npz")["frames"].shape[0] == 5


def test_offline_without_the_checkpoint_is_one_line(hub_world, monkeypatch):
    world, files = hub_world
    checkpoint = next(name for _, name in files if name.endswith(".pt"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(PROJECT_ROOT)
    with pytest.raises(CheckpointError) as info:
        open_session(world, device="cpu")
    assert str(info.value) == (
        f"missing {checkpoint} for world 'tiny-atari' (offline: HF_HUB_OFFLINE is set): download them with: "
        f"hf download {REPO} {checkpoint} --local-dir checkpoints/tiny-atari "
        "(or pass --weights denoiser=PATH --weights rew_end_model=PATH --weights actor_critic=PATH)")


def test_world_sizes_are_checked_against_the_checkpoints_configs(hub_world, diamond_dir):
    """Config yamls next to the world file are found first; one that disagrees with the world is named."""
    world, _ = hub_world
    meta = read_json(diamond_dir / "atari_agent.json")
    cfg = load_world_config(world)
    check_official_configs(cfg, allow_download=False)  # none to be had: nothing to compare
    for name, data in official_configs(meta, str(cfg.game), sigma_data=0.7).items():
        (world.parent / name).parent.mkdir(parents=True, exist_ok=True)
        (world.parent / name).write_bytes(data)
    with pytest.raises(ConfigError) as info:
        check_official_configs(cfg, allow_download=False)
    assert str(info.value) == (f"networks.denoiser.sigma_data is {meta['agent_config']['denoiser']['sigma_data']} but "
                               f"the checkpoint's config {world.parent / 'atari_100k/config/agent/default.yaml'} "
                               "has 0.7")
    for path in (world.parent / "atari_100k").rglob("*.yaml"):
        path.unlink()


def test_a_segment_cut_by_the_end_of_its_episode_replays_once_and_finishes(tmp_path, diamond_dir: Path):
    """A world that ends its episodes after 3 ticks records a 3-frame segment; its replay ends with the
    episode (the automatic reset after it does not start the replay over), and a reset asked for replays again."""
    world = write_tiny_world(tmp_path, diamond_dir)
    episodic = open_session(str(world), device="cpu", overrides=["episode.horizon=3", "episode.reset_on_end=false"])
    script = iter(torch.zeros((3, episodic.action_dim)))
    loop = InferenceLoop(episodic, lambda: next(((a, time.perf_counter()) for a in script), None))
    recorder = Recorder(tmp_path / "rec", episodic.world, episodic.fps, metadata=episodic.metadata,
                        history=loop.actions_since_reset, report=lambda message: None)
    recorder.start()
    loop.listeners.append(recorder)
    loop.start()
    wait_until(lambda: loop.finished)
    loop.stop()
    recorder.close()
    segment = min((tmp_path / "rec" / episodic.world).glob("*.npz"), key=lambda p: len(p.name))  # then "-2"
    assert len(read_recording(segment)["frames"]) == 3
    replay = ReplaySource(load_replay(segment))
    log = TickLog()
    episodic.reset()
    loop = InferenceLoop(episodic, replay.next_action, listeners=[replay, log]).start()
    try:
        wait_until(lambda: loop.finished)
        assert log.resets == 1 and len(log.ticks) == 3, "the episode's own reset, then no more ticks"
        assert replay.position() == "replay 3/3, episode over" and replay.identical == 3, replay.summary()
        loop.request_reset()
        wait_until(lambda: log.resets == 3 and loop.finished)  # the reset asked for, then the episode's again
        assert len(log.ticks) == 6 and replay.identical == 3
    finally:
        loop.stop()
