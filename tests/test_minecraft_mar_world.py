"""The minecraft-mar world: WorldMAR + Oasis VAE sessions with pose, memory bank and retrieval per tick.

Runs the fixture-size WorldMAR (model_small) with a VAE of WorldMAR's latent geometry built here
(tests/tiny_mar_world.py says why the fixture VAE cannot be used), headless and in-process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from engine.actions.vpt import ACTION_KEYS, camera_value, load_action_stream
from engine.checkpoints.resolve import resolve_checkpoint_files
from engine.core.config import load_world_config
from engine.core.loader import open_session
from engine.errors import CheckpointError, ConfigError
from engine.families.worldmar.world import dataset_action
from engine.memory.integrator import PoseIntegrator
from engine.memory.reference_retrieval import reference_retrieve
from engine.memory.retrieval import generate_points_in_sphere
from engine.recordings import read_recording
from tests.conftest import PROJECT_ROOT, read_json
from tests.tiny_mar_world import make_tiny_mar_world

FRAMES = 10
SEED = 3


def vpt_action(*keys: str, pitch_bin: int = 40, yaw_bin: int = 40) -> dict:
    action = {key: 0 for key in ACTION_KEYS if key not in ("cameraX", "cameraY")}
    action.update(dict.fromkeys(keys, 1))
    action["camera"] = [pitch_bin, yaw_bin]
    return action


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory, fixtures_dir) -> Path:
    return make_tiny_mar_world(tmp_path_factory.mktemp("tiny_mar"), fixtures_dir)


def frame_shape(world: Path) -> tuple[int, int, int]:
    """(H, W, 3) of the world's frames: its VAE's input size."""
    vae = load_world_config(world).networks.vae
    return int(vae.input_height), int(vae.input_width), 3


def context_slots(world: Path) -> int:
    """Previous plus memory frames a tick conditions on (the model's num_frames - 1)."""
    memory = load_world_config(world).memory
    return int(memory.num_prev_frames) + int(memory.num_mem_frames)


def reference_context(poses: torch.Tensor, t: int, points: torch.Tensor, memory) -> list[int]:
    """Frame numbers WorldMAR's per-pose reference retrieves for target frame t out of frames 0..t-1 (poses[n]
    is frame n's), laid out as the dataloader lays out the candidates (previous frame first, then oldest to
    newest); returned newest first."""
    candidates = torch.tensor([t - 1, *range(t - 1)])
    picked = reference_retrieve(poses[t], poses[candidates], points, min(int(memory.num_prev_frames), t),
                                float(memory.min_overlap), int(memory.num_prev_frames) + int(memory.num_mem_frames))
    return candidates[picked[: len(candidates)]].sort(descending=True).values.tolist()


@pytest.fixture(scope="module")
def action_file(tmp_path_factory) -> Path:
    """Walk and look around: forward, turn right, sprint, strafe, look down, turn back left."""
    rows = [vpt_action("forward"), vpt_action(yaw_bin=80), vpt_action("forward", "sprint", yaw_bin=70),
            vpt_action("right", pitch_bin=50), vpt_action("forward", yaw_bin=0), vpt_action("back", yaw_bin=10),
            vpt_action("left", "sneak"), vpt_action(yaw_bin=75), vpt_action("forward", pitch_bin=30),
            vpt_action("forward", "right", yaw_bin=60)]
    path = tmp_path_factory.mktemp("actions") / "walk.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path


@pytest.fixture(scope="module")
def headless_run(tiny_world, action_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "mar.mp4"
    result = subprocess.run(
        [sys.executable, "launcher.py", "--config", str(tiny_world), "--headless", "--device", "cpu",
         "--actions", str(action_file), "--frames", str(FRAMES), "--seed", str(SEED), "--out", str(out)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return out


def test_headless_run_writes_mp4_and_npz_with_poses_and_retrievals(headless_run, tiny_world, action_file):
    recording = read_recording(headless_run.with_suffix(".npz"))
    frames = recording["frames"]
    assert frames.shape == (FRAMES, *frame_shape(tiny_world)) and frames.dtype == np.uint8
    assert iio.imread(headless_run).shape == frames.shape
    expected_actions = load_action_stream(action_file, FRAMES).numpy()
    np.testing.assert_array_equal(recording["actions"], expected_actions)
    meta = recording["metadata"]
    assert (meta["world"], meta["family"], meta["seed"], meta["sampler"]) == ("tiny-mar", "worldmar", SEED, "mar")
    assert meta["backend"] == "eager"  # --backend auto on a CPU
    assert set(meta["checkpoint_sha256"]) == {"worldmar", "vae"}
    assert "retrieved_frames" in meta["extra_keys"]

    # Poses: the spawn pose for the prompt, then the actions integrated tick by tick.
    cfg = load_world_config(tiny_world)
    integrator = PoseIntegrator(tuple(cfg.spawn_pose))
    expected_poses = [integrator.pose] + [integrator.step(torch.from_numpy(a)) for a in expected_actions[1:]]
    np.testing.assert_allclose(recording["poses"], torch.stack(expected_poses).numpy(), atol=1e-5)
    assert len(np.unique(recording["poses"][:, 4])) >= 5  # the walk really turns

    # Retrievals: what WorldMAR's per-pose reference picks from all earlier frames (the bank holds them
    # all here), laid out as the dataloader does: previous frame first, then oldest to newest.
    retrieved = recording["retrieved_frames"]
    slots = context_slots(tiny_world)
    assert retrieved.shape == (FRAMES, slots) and retrieved.dtype == np.int64
    assert (retrieved[0] == -1).all()
    mem = cfg.memory
    points = generate_points_in_sphere(mem.points, mem.point_radius, generator=torch.Generator().manual_seed(SEED))
    poses = torch.from_numpy(recording["poses"])
    for t in range(1, FRAMES):
        chosen = reference_context(poses, t, points, mem)
        assert retrieved[t].tolist() == chosen + [-1] * (slots - len(chosen)), t
    assert retrieved[FRAMES - 1, 0] == FRAMES - 2
    assert (retrieved[-1] >= 0).all()


def test_session_tick_stages_hud_and_bank(tiny_world):
    cfg, shape, slots = load_world_config(tiny_world), frame_shape(tiny_world), context_slots(tiny_world)
    session = open_session(str(tiny_world), device="cpu", seed=1, allow_download=False)
    assert session.frame_index == 1 and torch.equal(session.pose, torch.tensor([5.0, 64.0, -3.0, 10.0, 30.0]))
    assert session.tick_extras()["retrieved_frames"].tolist() == [-1] * slots
    prompt = session.prompt_frames()
    assert prompt.shape == (1, *shape) and prompt.dtype == torch.uint8
    walk = torch.zeros(25)
    walk[ACTION_KEYS.index("forward")] = 1
    walk[ACTION_KEYS.index("cameraY")] = float(camera_value(60))  # 10° right per tick
    for tick in range(3):
        frame = session.step(walk).frame
        assert frame.shape == shape and frame.dtype == torch.uint8
        assert set(session.timer.milliseconds()) == {"pose", "memory", "sample", "decode", "store"}
        assert session.tick_extras()["retrieved_frames"][0] == tick  # the previous frame, always
    assert session.frame_index == 4 and len(session.bank) == 4
    assert float(session.pose[4]) == pytest.approx(60.0)
    stored = session.bank.frame_index[: len(session.bank)].tolist()
    poses = session.bank.poses[[stored.index(n) for n in range(len(stored))]]  # by frame number
    recalled = reference_context(poses, 3, session.points, cfg.memory)  # what the last tick (frame 3) conditioned on
    assert recalled[0] == 2
    assert session.tick_extras()["retrieved_frames"].tolist() == recalled + [-1] * (slots - len(recalled))
    assert session.hud_items() == [f"memory 4/{cfg.memory.capacity} frames",
                                   "recalled " + ", ".join(map(str, recalled))]
    assert torch.equal(session.bank.poses[3], session.pose)
    session.reset()
    assert session.frame_index == 1 and len(session.bank) == 1
    assert float(session.pose[4]) == 30.0


def test_memory_eviction_keeps_the_session_running(tmp_path, fixtures_dir):
    world = make_tiny_mar_world(tmp_path, fixtures_dir, capacity=4, keep_recent=1, points=500, mar_iters=2)
    session = open_session(str(world), device="cpu", seed=2, allow_download=False)
    turn = torch.zeros(25)
    turn[ACTION_KEYS.index("cameraY")] = float(camera_value(80))  # 20° per tick
    for _ in range(6):
        session.step(turn)
    before = set(session.bank.frame_index[: len(session.bank)].tolist())
    session.step(turn)
    stored = sorted(session.bank.frame_index[: len(session.bank)].tolist())
    assert len(before) == len(stored) == 4 and stored[-1] == 7 and 6 in stored
    retrieved = session.tick_extras()["retrieved_frames"].tolist()
    assert retrieved[0] == 6 and all(n in before or n == -1 for n in retrieved)


def test_save_and_load_memory_continue_exactly(tiny_world, tmp_path):
    turn = torch.zeros(25)
    turn[ACTION_KEYS.index("forward")] = 1
    turn[ACTION_KEYS.index("cameraX")] = float(camera_value(44))
    first = open_session(str(tiny_world), device="cpu", seed=5, allow_download=False)
    for _ in range(2):
        first.step(turn)
    path = tmp_path / "memory.safetensors"
    first.save_memory(path)
    saved_pose = first.pose.clone()
    expected = first.step(turn).frame
    second = open_session(str(tiny_world), device="cpu", seed=9, allow_download=False)
    second.load_memory(path)
    assert torch.equal(second.pose, saved_pose) and second.frame_index == 3 and len(second.bank) == 3
    assert torch.equal(second.step(turn).frame, expected)
    assert torch.equal(second.tick_extras()["retrieved_frames"], first.tick_extras()["retrieved_frames"])
    assert second.frame_index == first.frame_index


def test_dataset_action_encoding():
    action = torch.zeros(25)
    action[ACTION_KEYS.index("forward")] = 1
    action[ACTION_KEYS.index("attack")] = 1
    for bins, expected in (((52, 51), (0.025, 0.0)), ((16, 80), (-0.05, 0.075)), ((40, 29), (0.0, 0.0))):
        action[ACTION_KEYS.index("cameraX")] = float(camera_value(bins[0]))
        action[ACTION_KEYS.index("cameraY")] = float(camera_value(bins[1]))
        out = dataset_action(action)
        cam = out[[ACTION_KEYS.index("cameraX"), ACTION_KEYS.index("cameraY")]]
        assert torch.allclose(cam, torch.tensor(expected), atol=1e-7), bins
        assert torch.equal(torch.cat([out[:15], out[17:]]), torch.cat([action[:15], action[17:]]))


def test_missing_weights_say_there_are_none_public():
    cfg = load_world_config("minecraft-mar")
    with pytest.raises(CheckpointError, match=r"no public WorldMAR weights exist yet.*--config"):
        resolve_checkpoint_files(cfg, allow_download=False, project_root=Path("/nonexistent"))
    result = subprocess.run([sys.executable, "launcher.py", "--world", "minecraft-mar", "--headless", "--offline",
                             "--frames", "3", "--device", "cpu"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: missing world_mar.safetensors for world 'minecraft-mar': no public WorldMAR "
                           "weights exist yet") and "--config" in line


def test_vae_must_match_worldmar_latents(tiny_world, tmp_path, oasis_dir, fixtures_dir):
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(tiny_world)
    vae = read_json(oasis_dir / "vae.json")["kwargs"]
    cfg.checkpoints.files.vae = str(oasis_dir / "vae.safetensors")
    cfg.networks.vae = vae
    cfg.prompt.file = str(Path(tiny_world).parent / "prompt.png")
    path = tmp_path / "mismatch.yaml"
    OmegaConf.save(cfg, path)
    grid = (vae["input_height"] // vae["patch_size"], vae["input_width"] // vae["patch_size"], vae["latent_dim"])
    mar = read_json(fixtures_dir / "worldmar" / "model_small.json")
    patch = mar["constructor_kwargs"]["patch_size"]
    expected = (mar["derived"]["seq_h"] * patch, mar["derived"]["seq_w"] * patch,
                mar["constructor_kwargs"]["vae_embed_dim"])
    assert grid != expected, "the fixture VAE fits WorldMAR: nothing to refuse"
    with pytest.raises(ConfigError, match=rf"the VAE \(networks.vae\) gives a {grid[0]}x{grid[1]} grid of "
                                          rf"{grid[2]}-channel latents, WorldMAR \(networks.worldmar\) expects "
                                          rf"{expected[0]}x{expected[1]}x{expected[2]}"):
        open_session(str(path), device="cpu", allow_download=False)


@pytest.mark.parametrize(("setting", "message"), [
    ("memory.capcity=8", "memory.capcity is unknown"),
    ("memory.retrieval_backend=cuda", "memory.retrieval_backend must be one of auto, torch, triton"),
    ("memory.keep_recent=40", "0 <= keep_recent < capacity"),
])
def test_bad_memory_settings_are_one_line_errors(tiny_world, setting, message):
    with pytest.raises(ConfigError, match=message):
        open_session(str(tiny_world), device="cpu", allow_download=False, overrides=[setting])


def test_memory_frames_must_fill_the_models_frames(tiny_world):
    """One memory frame more than the model's num_frames holds is refused, with both counts."""
    cfg = load_world_config(tiny_world)
    frames, more = int(cfg.networks.worldmar.num_frames), int(cfg.memory.num_mem_frames) + 1
    message = (rf"num_frames is {frames}, but memory.num_prev_frames \+ memory.num_mem_frames \+ 1 is "
               rf"{int(cfg.memory.num_prev_frames) + more + 1}")
    with pytest.raises(ConfigError, match=message):
        open_session(str(tiny_world), device="cpu", allow_download=False,
                     overrides=[f"memory.num_mem_frames={more}"])


def test_verify_accepts_a_reference_trainer_checkpoint_and_names_a_broken_one(tiny_world, fixtures_dir, tmp_path):
    from safetensors.torch import load_file

    from engine.core.networks import verify_world
    from tests.test_worldmar_model import lightning_checkpoint

    weights = load_file(fixtures_dir / "worldmar" / "model_small.safetensors")
    good = tmp_path / "epochepoch=03.ckpt"
    torch.save(lightning_checkpoint(weights), good)
    cfg = load_world_config(tiny_world)
    (report,) = verify_world(cfg, {"worldmar": good})
    assert report.ok, report.lines()
    renamed = next(iter(weights))
    broken = tmp_path / "broken.ckpt"
    torch.save(lightning_checkpoint({**{k: v for k, v in weights.items() if k != renamed},
                                     renamed + "_old": weights[renamed]}), broken)
    (report,) = verify_world(cfg, {"worldmar": broken})
    assert not report.ok and any(renamed in line for line in report.lines())
