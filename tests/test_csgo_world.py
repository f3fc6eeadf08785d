"""The `csgo` world: networks and full-size checkpoints against the manifest, the session's tick against the
reference world-model steps, the sampler presets, spawn points, the keymap, and a headless run."""

from __future__ import annotations

import io as bytes_io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

import launcher
from engine.actions.csgo import encode_csgo_action
from engine.actions.keymap import Keymap
from engine.checkpoints.__main__ import main as checkpoints_main
from engine.checkpoints.loading import state_shapes
from engine.core.config import load_world_config
from engine.core.loader import load_networks, open_session
from engine.core.networks import build_networks
from engine.errors import CheckpointError, ConfigError
from engine.families.diamond.csgo import PlayTick, ReferenceTick, preset_settings, to_uint8
from engine.families.diamond.csgo_spawn import SPAWN_FILES, resolve_spawn_root
from engine.families.diamond.denoiser import Denoiser, DenoiserConfig
from engine.families.diamond.play import PlayDenoiser
from engine.recordings import read_recording
from tests.conftest import fixture_json, read_json
from tests.hub_server import FakeHub
from tests.test_checkpoints_download import hub_env
from tests.test_diamond_models import assert_quantized_close
from tests.test_diamond_sampler import ListNoise

ROLES = ("denoiser", "upsampler")
BLOCK = 1 << 20
# the world-model cases of this fixture set (the tiny world's presets; parametrize reads them at collection)
CASES = list(fixture_json("diamond/csgo_world_model_env.json").get("cases", {}))


def world_config(agent: dict, presets: dict, checkpoint: str, spawn: str, frame_size: list[int]) -> dict:
    networks = {}
    for role in ROLES:
        spec = dict(agent["agent_config"][role])
        inner = {k: v for k, v in spec.pop("inner_model").items() if k != "is_upsampler"}
        if role == "upsampler":
            inner.pop("num_actions", None)
        else:
            spec.pop("upsampling_factor")
        networks[role] = {**spec, "inner_model": inner}
    return {"name": "tiny-csgo", "family": "csgo",
            "checkpoints": {"repo": "local/none", "files": dict.fromkeys(ROLES, checkpoint),
                            "prefixes": {role: f"{role}." for role in ROLES}},
            "networks": networks, "frame_size": frame_size,
            "sampler": {"preset": next(iter(presets)), "presets": presets},
            "prompt": {"file": spawn}, "actions": {"keymap": "csgo"}, "fps": 15}


def write_spawn_point(folder: Path, io: dict) -> Path:
    """The fixture's spawn tensors as .npy files in the official layout (`<dir>/{low_res,...}.npy`)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in SPAWN_FILES:
        np.save(folder / name, io[f"spawn.{name.removesuffix('.npy')}"].numpy())
    return folder


@pytest.fixture(scope="module")
def fixture(diamond_dir: Path) -> dict:
    return read_fixture(diamond_dir)


def read_fixture(diamond_dir: Path) -> dict:
    return {"agent": read_json(diamond_dir / "csgo_agent.json"),
            "env": read_json(diamond_dir / "csgo_world_model_env.json"),
            "io": load_file(diamond_dir / "csgo_world_model_env.safetensors")}


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory, diamond_dir: Path, fixture: dict) -> Path:
    return make_tiny_world(tmp_path_factory.mktemp("tiny-csgo"), diamond_dir, fixture)


def make_tiny_world(folder: Path, diamond_dir: Path, fixture: dict) -> Path:
    """A csgo world of fixture size: the fixture weights, one spawn point, the fixture's sampler cases as presets."""
    write_spawn_point(folder / "spawn" / "point-0", fixture["io"])
    presets = {case: {"next_obs": spec["diffusion_sampler_next_obs"],
                      "upsampling": spec["diffusion_sampler_upsampling"]}
               for case, spec in fixture["env"]["cases"].items()}
    agent = fixture["agent"]
    config = world_config(agent, presets, str(diamond_dir / "csgo_agent.safetensors"), "./spawn",
                          list(agent["full_res_size"]))
    path = folder / "tiny_csgo.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# Networks and checkpoints


def manifest_shapes(manifest: dict, role: str) -> dict[str, tuple[int, ...]]:
    return {key[len(role) + 1:]: tuple(spec["shape"]) for key, spec in manifest["keys"].items()
            if key.startswith(f"{role}.")}


def test_networks_match_the_full_size_manifest(diamond_dir: Path):
    manifest = read_json(diamond_dir / "manifest_csgo_agent.json")
    networks = build_networks(load_world_config("csgo"), "meta")
    for role in ROLES:
        assert state_shapes(networks[role]) == manifest_shapes(manifest, role)
    assert sum(p.numel() for n in networks.values() for p in n.parameters()) == manifest["num_parameters"]["total"]


@pytest.fixture(scope="module")
def full_size_checkpoint(tmp_path_factory, diamond_dir: Path) -> Path:
    """A random csgo.pt in the official format: one flat `denoiser.` / `upsampler.` state dict, torch.save."""
    manifest = read_json(diamond_dir / "manifest_csgo_agent.json")
    generator = torch.Generator().manual_seed(0)
    block = torch.randn(2 * BLOCK, generator=generator)
    state = {}
    for key, spec in manifest["keys"].items():  # tiles of a random block at random offsets: cheap, no two alike
        flat = torch.empty(spec["shape"]).view(-1)
        start = int(torch.randint(BLOCK, (), generator=generator))
        whole, rest = divmod(flat.numel(), BLOCK)
        flat[: whole * BLOCK].view(whole, BLOCK).copy_(block[start:start + BLOCK].expand(whole, BLOCK))
        flat[whole * BLOCK:].copy_(block[start:start + rest])
        state[key] = flat.view(spec["shape"])
    path = tmp_path_factory.mktemp("full-size") / "csgo.pt"
    torch.save(state, path)
    return path


def test_full_size_checkpoint_loads_strictly(full_size_checkpoint: Path):
    cfg = load_world_config("csgo")
    networks = load_networks(cfg, dict.fromkeys(ROLES, full_size_checkpoint), torch.device("cpu"), torch.float32)
    state = torch.load(full_size_checkpoint, mmap=True, weights_only=True)
    for role, network in networks.items():
        for key, value in network.state_dict().items():
            assert torch.equal(value, state[f"{role}.{key}"]), key
    fourier = networks["denoiser"].inner_model.noise_cond_emb.weight
    assert torch.equal(fourier, state["denoiser.inner_model.noise_cond_emb.weight"])  # loaded, not re-drawn


def test_verify_accepts_the_full_size_checkpoint(full_size_checkpoint: Path, diamond_dir: Path, capsys):
    """`python -m engine.checkpoints verify csgo ...` on the official file (one role: each hashes all 1.5 GB)."""
    manifest = read_json(diamond_dir / "manifest_csgo_agent.json")
    tensors = sum(key.startswith("upsampler.") for key in manifest["keys"])
    elements = manifest["num_state_dict_elements"]["upsampler"]
    assert checkpoints_main(["verify", "csgo", f"upsampler={full_size_checkpoint}"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"ok: {full_size_checkpoint} ({tensors} tensors, {elements:,} parameters, sha256 ")


def test_mismatched_checkpoint_is_a_one_line_error(tmp_path: Path, diamond_dir: Path):
    """A checkpoint of a model with one action fewer: the only key that depends on num_actions is named."""
    manifest = read_json(diamond_dir / "manifest_csgo_agent.json")
    key = manifest["keys_depending_on_num_actions"][0]
    shapes = manifest_shapes(manifest, "denoiser")
    expected = shapes[key.removeprefix("denoiser.")]
    found = (expected[0] - 1, *expected[1:])
    zero = torch.zeros(1)
    state = {f"denoiser.{k}": zero.expand(shape) for k, shape in shapes.items()}  # one stored element
    state[key] = zero.expand(found)
    path = tmp_path / f"csgo-{found[0]}-actions.pt"
    torch.save(state, path)
    networks = build_networks(load_world_config("csgo"), "meta")
    from engine.checkpoints.loading import load_into

    with pytest.raises(CheckpointError) as error:
        load_into(networks["denoiser"], path, prefix="denoiser.")
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    assert f"{key.removeprefix('denoiser.')}: expected {expected}, found {found}" in message


# The tick against the reference world-model steps


def fixture_buffers(io: dict, case: str, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The reference env's (obs, full-res obs, act) buffers before step k, rebuilt from the recorded steps."""
    to_unit = lambda u8: u8.float().div(255).mul(2).sub(1)  # noqa: E731
    obs, full = to_unit(io["spawn.low_res"])[None], to_unit(io["spawn.full_res"])[None]
    act = io["spawn.act"][None].float()
    for j in range(k):
        obs, full = obs.roll(-1, dims=1), full.roll(-1, dims=1)
        obs[:, -1], full[:, -1] = io[f"{case}.step{j}.next_obs_low"], io[f"{case}.step{j}.next_obs_full"]
        act = io[f"{case}.step{j}.act_buffer_after"].float()
    return obs, full, act


@pytest.mark.parametrize("sampler", ["cached", "reference"])
@pytest.mark.parametrize("case", CASES)
def test_session_tick_equals_the_reference_steps(tiny_world: Path, fixture: dict, case: str, sampler: str):
    """Each step starts from the reference's buffers (a one-level flip in one step must not feed the next)."""
    io, spec = fixture["io"], fixture["env"]["cases"][case]
    session = open_session(tiny_world, device="cpu", sampler=sampler, overrides=[f"sampler.preset={case}"])
    session.noise = ListNoise([io[f"{case}.rand_{i:02d}"] for i in range(len(spec["random_draws"]))])
    tick = session.tick
    assert isinstance(tick, PlayTick if sampler == "cached" else ReferenceTick)
    for k in range(spec["num_env_steps"]):
        p = f"{case}.step{k}."
        tick.reset(*fixture_buffers(io, case, k))
        action = io[f"{case}.step_acts"][k].float()
        next_obs, next_full = tick.step(action, session.noise)
        assert_quantized_close(next_obs, io[p + "next_obs_low"])
        assert_quantized_close(next_full, io[p + "next_obs_full"])
        act_after = tick.act.window(tick.act.length) if sampler == "cached" else tick.act_buffer
        assert torch.equal(act_after.long(), io[p + "act_buffer_after"])
    assert session.noise.index == len(session.noise.tensors)


def test_session_frames_follow_the_reference_display(tiny_world: Path, fixture: dict):
    """`step` returns the upsampled frame as uint8 (H, W, 3), truncated as the reference shows it (the world's
    default preset: the fixture's first case)."""
    case = next(iter(fixture["env"]["cases"]))
    io, spec = fixture["io"], fixture["env"]["cases"][case]
    num_actions = fixture["agent"]["num_actions"]
    session = open_session(tiny_world, device="cpu")
    session.noise = ListNoise([io[f"{case}.rand_{i:02d}"] for i in range(len(spec["random_draws"]))])
    assert session.frame_size == tuple(fixture["agent"]["full_res_size"]) and session.action_dim == num_actions
    prompt = session.prompt_frames()
    assert torch.equal(prompt, io["spawn.full_res"].permute(0, 2, 3, 1))
    frame = session.step(io[f"{case}.step_acts"][0].float()).frame
    expected = to_uint8(io[f"{case}.step0.next_obs_full"][0])
    assert frame.shape == (*session.frame_size, 3) and frame.dtype == torch.uint8
    assert (frame.int() - expected.int()).abs().max() <= 2
    assert session.frame_index == prompt.shape[0] + 1
    with pytest.raises(ConfigError, match="multi-hot 0/1"):
        session.step(torch.full((num_actions,), 0.5))


def test_cached_and_reference_sessions_agree_over_ticks(tiny_world: Path):
    sessions = [open_session(tiny_world, device="cpu", sampler=kind, seed=5) for kind in ("cached", "reference")]
    keymap = Keymap.load("csgo")
    inputs = [({"w"}, 0, 0), ({"w", "d"}, 40, -3), ({"space"}, -200, 0), (set(), 0, 12)]
    for keys, dx, dy in inputs:
        action = keymap.to_action(frozenset(keys), frozenset({"left"}), dx, dy)
        cached, reference = (s.step(action).frame.int() for s in sessions)
        assert (cached - reference).abs().max() <= 2
    assert sessions[0].metadata()["sampler"] == "cached" and sessions[1].metadata()["sampler"] == "reference"


def test_play_denoiser_equals_the_denoiser(diamond_dir: Path):
    """The play denoiser (stacked modulations, channels-last, packed convolutions or the plain channels-last ones that
    CUDA runs) on the fixture's denoise calls."""
    meta = read_json(diamond_dir / "csgo_agent.json")["agent_config"]
    state = load_file(diamond_dir / "csgo_agent.safetensors")
    for role, name in (("denoiser", "csgo_denoise_io"), ("upsampler", "csgo_upsampler_denoise_io")):
        model = Denoiser(DenoiserConfig.from_dict(meta[role])).eval()
        model.load_from(state, f"{role}.")
        io = load_file(diamond_dir / f"{name}.safetensors")
        expected = io["cond.denoised" if role == "denoiser" else "denoised"]
        for b, pack in ((0, True), (1, False), (0, False)):
            sigma_cond = io["sigma_cond"][b:b + 1] if role == "denoiser" else None
            play = PlayDenoiser(model, [io["sigma"][b:b + 1]], sigma_cond, pack_weights=pack)
            assert play.conv_in.onednn == pack
            play.begin(io["act"][b:b + 1] if role == "denoiser" else None)
            out = play(io["noisy_next_obs"][b:b + 1], io["sigma"][b:b + 1], io["obs"][b:b + 1], None, sigma_cond)
            assert_quantized_close(out, expected[b:b + 1])
            with pytest.raises(RuntimeError, match="begin"):
                play(io["noisy_next_obs"][b:b + 1], io["sigma"][b:b + 1], io["obs"][b:b + 1], None, sigma_cond)


# Presets


# config/world_model_env/fast.yaml of the reference (csgo branch)
FAST_YAML = {
    "diffusion_sampler_next_obs": {"num_steps_denoising": 1, "sigma_min": 2e-3, "sigma_max": 5.0, "rho": 7, "order": 1,
                                   "s_churn": 0.0, "s_tmin": 0.0, "s_tmax": "inf", "s_noise": 1.0, "s_cond": 0.005},
    "diffusion_sampler_upsampling": {"num_steps_denoising": 1, "sigma_min": 1.0, "sigma_max": 5.0, "rho": 7,
                                     "order": 2, "s_churn": 10.0, "s_tmin": 1.0, "s_tmax": 5.0, "s_noise": 0.9,
                                     "s_cond": 0.0}}


def test_presets_are_diamonds(fixture: dict):
    """`fast` is config/world_model_env/fast.yaml (and the fixture's `fast` case, where the fixture set has one);
    `higher_quality` takes 3 Euler steps for the next frame and 10 Euler steps with churn for the upsampling."""
    cfg = load_world_config("csgo")
    assert cfg.sampler.preset == "fast"
    _, fast_next, fast_up = preset_settings(cfg)
    case = fixture["env"]["cases"].get("fast")
    if case is not None:
        assert {part: case[part] for part in FAST_YAML} == FAST_YAML
    for got, want in ((fast_next, FAST_YAML["diffusion_sampler_next_obs"]),
                      (fast_up, FAST_YAML["diffusion_sampler_upsampling"])):
        assert got.__dict__ == {k: float(v) if k not in ("num_steps_denoising", "order") else v
                                for k, v in want.items()}
    name, hq_next, hq_up = preset_settings(load_world_config("csgo", ["sampler.preset=higher_quality"]))
    assert name == "higher_quality"
    assert (hq_next.num_steps_denoising, hq_next.order, hq_next.s_cond) == (3, 1, 0.005)
    assert (hq_up.num_steps_denoising, hq_up.order, hq_up.s_churn, hq_up.s_noise) == (10, 1, 10.0, 0.9)
    assert hq_up.gamma == pytest.approx(2**0.5 - 1) and fast_up.gamma == pytest.approx(2**0.5 - 1)
    assert {k: v for k, v in hq_next.__dict__.items() if k != "num_steps_denoising"} == \
        {k: v for k, v in fast_next.__dict__.items() if k != "num_steps_denoising"}
    assert preset_settings(cfg, steps=2)[1].num_steps_denoising == 2
    with pytest.raises(ConfigError, match=r"sampler\.preset 'best' is not one of fast, higher_quality"):
        preset_settings(load_world_config("csgo", ["sampler.preset=best"]))


def test_presets_change_the_denoiser_calls_per_tick(tiny_world: Path, fixture: dict):
    """Each preset (a fixture case) makes as many denoiser calls per tick as the reference's first step did."""
    calls, expected = {}, {}
    for preset, spec in fixture["env"]["cases"].items():
        session = open_session(tiny_world, device="cpu", overrides=[f"sampler.preset={preset}"])
        tick = session.tick
        calls[preset] = (len(tick.next_denoiser.conditioners), len(tick.up_denoiser.conditioners))
        session.step(encode_csgo_action([]))
        expected[preset] = tuple(sum(c["step"] == 0 and c["sampler"] == which for c in spec["denoise_calls"])
                                 for which in ("next_obs", "upsampling"))
    assert calls == expected


# Spawn points and actions


def test_spawn_points_cycle_on_reset(tiny_world: Path, fixture: dict, tmp_path: Path):
    io = dict(fixture["io"])
    write_spawn_point(tmp_path / "b", io)
    io["spawn.full_res"] = 255 - io["spawn.full_res"]
    write_spawn_point(tmp_path / "a", io)
    session = open_session(tiny_world, device="cpu", prompt=tmp_path)
    names = [session.spawn.name]
    for _ in range(2):
        session.reset()
        names.append(session.spawn.name)
    assert names == ["a", "b", "a"]
    assert torch.equal(session.prompt_frames(), io["spawn.full_res"].permute(0, 2, 3, 1))


SPAWN_SCRIPT = """
import sys
from pathlib import Path
from engine.errors import ConfigError
from engine.core.config import load_world_config
from engine.families.diamond.csgo_spawn import hub_spawn_dir, resolve_spawn_root, spawn_point_dirs
try:
    root = resolve_spawn_root(load_world_config(sys.argv[1]), project_root=Path(sys.argv[2]))
except ConfigError as exc:
    print(exc)
    sys.exit(3)
print(root, *(path.name for path in spawn_point_dirs(root)))
print(hub_spawn_dir(sys.argv[3], "main", "csgo/spawn", local_files_only=True))
"""


def test_spawn_points_download_with_the_weights_repo(tiny_world: Path, fixture: dict, tmp_path: Path):
    """Spawn points come from checkpoints.repo into the Hugging Face cache, and are found there again without
    the network."""
    repo = "test-org/diamond"
    files = {}
    for point in ("p1", "p0"):
        for name in SPAWN_FILES:
            buffer = bytes_io.BytesIO()
            np.save(buffer, fixture["io"][f"spawn.{name.removesuffix('.npy')}"].numpy())
            files[(repo, f"csgo/spawn/{point}/{name}")] = buffer.getvalue()
    config = yaml.safe_load(tiny_world.read_text())
    config["checkpoints"]["repo"] = repo
    config["prompt"]["file"] = "csgo/spawn"
    world = tmp_path / "hub_csgo.yaml"
    world.write_text(yaml.safe_dump(config))
    hf_home, project = tmp_path / "hf", tmp_path / "project"
    project.mkdir()
    command = [sys.executable, "-c", SPAWN_SCRIPT, str(world), str(project), repo]
    with FakeHub(files) as hub:
        done = subprocess.run(command, env=hub_env(hf_home, hub.url), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    downloaded, cached = done.stdout.splitlines()
    root, *points = downloaded.split()
    assert Path(root).is_relative_to(hf_home) and points == ["p0", "p1"] and cached == root
    assert (Path(root) / "p1" / "act.npy").read_bytes() == files[(repo, "csgo/spawn/p1/act.npy")]


def test_offline_spawn_error_names_the_files_and_the_command(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    cfg = load_world_config("csgo")
    with pytest.raises(ConfigError) as error:
        resolve_spawn_root(cfg, project_root=tmp_path)
    message = str(error.value)
    assert "\n" not in message
    assert "missing spawn points csgo/spawn/<dir>/{low_res,full_res,act,next_act}.npy for world 'csgo'" in message
    assert "offline" in message
    assert "download eloialonso/diamond --include 'csgo/spawn/*' --local-dir" in message
    assert "--prompt DIR" in message


def test_spawn_point_with_missing_or_wrong_files(tiny_world: Path, fixture: dict, tmp_path: Path):
    point = write_spawn_point(tmp_path / "broken", fixture["io"])
    (point / "next_act.npy").unlink()
    with pytest.raises(ConfigError, match=r"lacks next_act\.npy"):
        open_session(tiny_world, device="cpu", prompt=point)
    write_spawn_point(point, fixture["io"])
    low_res = fixture["io"]["spawn.low_res"]
    short = low_res[: len(low_res) - 1]
    np.save(point / "low_res.npy", short.numpy())
    shapes = (re.escape(str(tuple(short.shape))), re.escape(str(tuple(low_res.shape))))
    with pytest.raises(ConfigError, match=r"low_res\.npy has shape {}, expected {}".format(*shapes)):
        open_session(tiny_world, device="cpu", prompt=point)
    with pytest.raises(ConfigError, match="holds no spawn points"):
        open_session(tiny_world, device="cpu", prompt=tmp_path / "nothing")


def test_keymap_gives_diamonds_action_vector():
    keymap = Keymap.load("csgo")
    vector = keymap.to_action(frozenset({"w", "s", "1", "3", "left shift", "up", "q"}), frozenset({"right"}), 1.2, 0.4)
    assert torch.equal(vector, encode_csgo_action(["w", "1", "left shift", "up"], 12, 4, r_click=True))
    assert vector.nonzero().flatten().tolist() == [0, 6, 7, 12, 13 + 14, 36 + 2]  # x 12 -> bin 10, y: up -> -50
    idle = keymap.to_action(frozenset(), frozenset(), 0, 0)
    assert idle.nonzero().flatten().tolist() == [24, 43]


# Player window


def test_player_turns_keys_and_mouse_into_csgo_actions(display, tiny_world: Path, tmp_path: Path):
    """The real window under Xvfb: held w and a mouse click reach the world as DIAMOND's 51-dim vector."""
    from app.player import open_player
    from tests.test_app_support import TickLog, find_window, player_args, pump, xdotool

    args = player_args(tiny_world, tmp_path / "recordings", "--window-size", "280x150")
    with open_player(args) as player:
        player.log = TickLog()
        player.source.listeners.append(player.log)
        window = find_window()
        xdotool("windowfocus", window)
        xdotool("mousemove", "--window", window, "140", "75")
        actions = lambda: [t.action for t in player.log.ticks if t.action is not None]  # noqa: E731
        pump(player, lambda: len(actions()) >= 1, what="first tick")
        xdotool("keydown", "w")
        xdotool("mousedown", "1")
        wanted = encode_csgo_action(["w"], l_click=True)[:13]  # keys and clicks; the mouse bins may move
        pump(player, lambda: any(torch.equal(a[:13], wanted) for a in actions()), what="w + left click")
        xdotool("keyup", "w")
        xdotool("mouseup", "1")
        for action in actions():
            assert action.shape == (51,) and set(action.unique().tolist()) <= {0.0, 1.0}
            assert action[13:36].sum() == 1 and action[36:51].sum() == 1  # one mouse-x and one mouse-y bin
        assert player.log.ticks[-1].frame.shape == (*read_json_frame_size(tiny_world), 3)


# Headless


def test_headless_run_writes_mp4_and_npz(tiny_world: Path, fixture: dict, tmp_path: Path):
    keymap = Keymap.load("csgo")
    frames = 7
    inputs = [({"w"}, 0, 0), ({"w", "a"}, -30, 0), ({"d"}, 5, 20)] * 3
    actions = torch.stack([keymap.to_action(frozenset(k), frozenset(), dx, dy) for k, dx, dy in inputs[:frames]])
    actions_file = tmp_path / "actions.npz"
    np.savez(actions_file, actions=actions.numpy())
    out = tmp_path / "run.mp4"
    assert launcher.main(["--config", str(tiny_world), "--headless", "--device", "cpu", "--offline", "--actions",
                          str(actions_file), "--frames", str(frames), "--seed", "2", "--out", str(out)]) == 0
    recording = read_recording(out.with_suffix(".npz"))
    height, width = read_json_frame_size(tiny_world)
    assert recording["frames"].shape == (frames, height, width, 3)
    np.testing.assert_array_equal(recording["actions"], actions.numpy())
    meta = recording["metadata"]
    preset = next(iter(fixture["env"]["cases"]))  # the tiny world's default preset
    assert meta["world"] == "tiny-csgo" and meta["family"] == "csgo" and meta["preset"] == preset
    assert meta["spawn"] == "point-0" and set(meta["checkpoint_sha256"]) == set(ROLES)
    assert out.stat().st_size > 0
    session = open_session(tiny_world, device="cpu", seed=2)
    expected = [*session.prompt_frames().numpy()]
    expected += [session.step(actions[j]).frame.numpy() for j in range(len(expected), frames)]
    np.testing.assert_array_equal(recording["frames"], np.stack(expected))


def test_headless_run_restarts_episodes_at_the_horizon(tiny_world: Path, tmp_path: Path):
    """With one spawn point and idle input every episode is the same: each restart goes back to the spawn point
    and the noise stream's start; the recording numbers the episodes frame by frame."""
    out = tmp_path / "run.mp4"
    prompt = open_session(tiny_world, device="cpu").prompt_frames().shape[0]
    frames = prompt + 6
    assert launcher.main(["--config", str(tiny_world), "--headless", "--device", "cpu", "--offline", "--frames",
                          str(frames), "--set", "episode.horizon=2", "--out", str(out)]) == 0
    recording = read_recording(out.with_suffix(".npz"))
    np.testing.assert_array_equal(recording["episode"], [0] * prompt + [0, 0, 1, 1, 2, 2])
    ticks = recording["frames"][prompt:]
    np.testing.assert_array_equal(ticks[0:2], ticks[2:4])
    np.testing.assert_array_equal(ticks[0:2], ticks[4:6])
    assert recording["metadata"]["episode"] == {"horizon": 2, "reset_on_end": False}


def read_json_frame_size(world: Path) -> tuple[int, int]:
    return tuple(yaml.safe_load(world.read_text())["frame_size"])
