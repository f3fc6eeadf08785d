"""Training data: VPT mp4 + jsonl episodes, npz recordings, the latent cache, and the per-family items
(Oasis clips, DIAMOND segments, WorldMAR memory items, the latter against the world-mar fixtures)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from engine.actions.keymap import Keymap
from engine.actions.vpt import ACTION_KEYS, PITCH_COLUMN, YAW_COLUMN, camera_value
from engine.errors import ConfigError
from engine.families.oasis.vae import OasisVAE
from engine.recordings import SegmentWriter
from engine.train.data import (
    ArrayFrames,
    DiamondSegments,
    Episode,
    LatentCache,
    LatentCacheWriter,
    OasisClips,
    WorldMarItems,
    build_latent_cache,
    find_episodes,
    load_vpt_episode,
    memory_shifts,
    read_vpt_jsonl,
    to_model_frames,
    vpt_action_matrix,
    vpt_poses,
)
from engine.train.data.latent_cache import main as latent_cache_main
from tests.conftest import read_json
from tests.tiny_world import make_tiny_oasis_world

COLUMN = {key: i for i, key in enumerate(ACTION_KEYS)}
LEVEL_STEP = 8  # grey-level spacing between consecutive synthetic frames (survives H.264)


@pytest.fixture(scope="module")
def worldmar_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "worldmar"


@pytest.fixture(scope="module")
def vae(oasis_dir: Path) -> OasisVAE:
    model = OasisVAE(**read_json(oasis_dir / "vae.json")["kwargs"])
    model.load_state_dict(load_file(oasis_dir / "vae.safetensors"))
    return model.eval().requires_grad_(False)


def frame_level(k: int) -> int:
    return 16 + LEVEL_STEP * k


def synthetic_frames(count: int, height: int, width: int) -> np.ndarray:
    """Frame k: flat grey level 16 + 8k with a gradient in the blue channel (VAE inputs stay varied)."""
    frames = np.zeros((count, height, width, 3), np.uint8)
    ramp = np.linspace(0, 200, width, dtype=np.float32).astype(np.uint8)
    for k in range(count):
        frames[k, :, :, :2] = frame_level(k)
        frames[k, :, :, 2] = ramp[None, :]
    return frames


def decoded_level(frames: np.ndarray) -> list[int]:
    """Nearest frame number of decoded frames (from the red/green level)."""
    return [round((float(f[..., :2].mean()) - 16) / LEVEL_STEP) for f in frames]


def vpt_tick(k: int, rng: np.random.Generator) -> dict:
    keys = [str(key) for key in rng.choice(["key.keyboard.w", "key.keyboard.space", "key.keyboard.x"],
                                       size=int(rng.integers(0, 3)), replace=False)]
    return {"mouse": {"dx": float(rng.integers(-300, 300)), "dy": float(rng.integers(-100, 100)),
                      "buttons": [0] if k % 3 == 0 else [], "newButtons": []},
            "keyboard": {"keys": keys}, "isGuiOpen": k % 7 == 3, "hotbar": (k // 4) % 9,
            "xpos": 0.5 * k, "ypos": 64.0, "zpos": -0.25 * k, "pitch": float(k % 10) - 5, "yaw": 3.0 * k}


def write_vpt_episode(folder: Path, name: str, frames: np.ndarray, ticks: int, seed: int = 0) -> Path:
    """`<name>.mp4` (H.264 at 20 fps, as VPT) and `<name>.jsonl` with `ticks` ticks; returns the jsonl."""
    folder.mkdir(parents=True, exist_ok=True)
    height, width = frames.shape[1:3]
    writer = imageio_ffmpeg.write_frames(str(folder / f"{name}.mp4"), (width, height), fps=20, macro_block_size=2,
                                         output_params=["-g", "8", "-crf", "12"])
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    rng = np.random.default_rng(seed)
    path = folder / f"{name}.jsonl"
    path.write_text("".join(json.dumps(vpt_tick(k, rng)) + "\n" for k in range(ticks)))
    return path


def write_recording(stem: Path, frames: np.ndarray, action_dim: int, with_rewards: bool = True) -> Path:
    """A real SegmentWriter recording with one-hot actions, poses, and reward/end extras."""
    with SegmentWriter(stem, world="test", fps=15) as writer:
        for k, frame in enumerate(frames):
            action = np.zeros(action_dim, np.float32)
            action[k % action_dim] = 1
            extra = {"rewards": np.float32(k % 2), "ends": np.bool_(k == len(frames) - 1)} if with_rewards else None
            writer.append(frame, action, pose=[k, 0, 0, 0, 0], timestamp=k / 15, extra=extra)
    return stem.with_suffix(".npz")


# ---------------------------------------------------------------- WorldMAR reference fixtures


def test_vpt_metadata_matches_worldmar_reference(worldmar_dir: Path) -> None:
    expected = load_file(worldmar_dir / "dataset_io.safetensors")
    meta = read_json(worldmar_dir / "dataset.json")
    ticks = read_vpt_jsonl(worldmar_dir / "dataset_demo.jsonl")
    assert len(ticks) == meta["n_frames"]
    actions = vpt_action_matrix(ticks, reference_compat=True)
    assert torch.equal(actions.view(torch.int32), expected["action_matrix"].view(torch.int32))  # bit for bit
    assert torch.equal(vpt_poses(ticks), expected["pose_matrix"])
    episode = load_vpt_episode(worldmar_dir / "dataset_demo.jsonl", reference_compat=True)
    assert torch.equal(episode.gui_open, expected["is_gui_open"])
    # Frame t is conditioned by tick t-1's action; frame 0 by the zero action.
    assert torch.equal(episode.actions[0], torch.zeros(len(ACTION_KEYS)))
    assert torch.equal(episode.actions[1:], expected["action_matrix"][:-1])
    params = meta["dataset_params"]
    shifts = memory_shifts(params["memory_size"], params["memory_distance"], params["prev_distance"])
    assert torch.equal(shifts, expected["mem_idx_shifts"])


def frame_number_cache(folder: Path, episode: Episode, tokens: int, channels: int, grid: list[int]) -> LatentCache:
    """The reference's precomputed latents: every value of frame k's latent equals k."""
    writer = LatentCacheWriter(folder, {"sha256": None, "latent_dim": channels, "grid": grid, "image_size": [0, 0]},
                               shard_frames=64)
    writer.begin(episode.name, episode.num_frames)
    values = torch.arange(episode.num_frames, dtype=torch.float32)[:, None, None].expand(-1, tokens, channels)
    for start in range(0, episode.num_frames, 50):
        chunk = values[start:start + 50]
        writer.append(episode.name, chunk, torch.full_like(chunk, -30.0))
    return LatentCache(folder)


def test_worldmar_items_reproduce_reference(worldmar_dir: Path, oasis_dir: Path, tmp_path: Path) -> None:
    expected = load_file(worldmar_dir / "dataset_io.safetensors")
    meta = read_json(worldmar_dir / "dataset.json")
    plucker_meta = safe_open(str(worldmar_dir / "plucker_io.safetensors"), "pt").metadata()
    episode = load_vpt_episode(worldmar_dir / "dataset_demo.jsonl", reference_compat=True)
    episode.name = meta["demo_id"]
    # Latent geometry of the full-size VAE (the reference stores (576, 16) per frame).
    vae = read_json(oasis_dir / "manifest_vit_l_20.json")["constructor"]
    grid = [vae["input_height"] // vae["patch_size"], vae["input_width"] // vae["patch_size"]]
    channels = vae["latent_dim"]
    cache = frame_number_cache(tmp_path / "cache", episode, grid[0] * grid[1], channels, grid)
    items = WorldMarItems([episode], cache, **meta["dataset_params"], reference_compat=True, points=expected["points"],
                          posterior="mean", focal_length=float(plucker_meta["focal_length"]),
                          image_width=int(plucker_meta["image_width"]),
                          image_height=int(plucker_meta["image_height"]))
    assert len(items) == meta["len_dataset"]
    assert items.num_frames == 1 + meta["dataset_params"]["num_mem_frames"] + meta["dataset_params"]["num_prev_frames"]
    for j, case in enumerate(meta["items"]):
        index = case["dataset_index"]
        assert items.locate(index) == (0, case["frame_idx"] - 1)
        candidates, _ = items.context(episode, case["frame_idx"], items.generator(index))
        assert torch.equal(candidates, expected[f"item_candidates_{j}"])
        item = items[index]
        assert item["frame_indices"].tolist() == case["frame_indices"]
        assert torch.equal(item["timestamps"], expected[f"item_timestamps_{j}"])
        assert item["timestamps"].tolist() == case["timestamps"]
        assert torch.equal(item["action"], expected[f"item_action_{j}"])
        assert int(item["num_non_padding_frames"]) == case["num_non_padding_frames"]
        torch.testing.assert_close(item["plucker"], expected[f"item_plucker_sub_{j}"], atol=1e-4, rtol=0)
        assert torch.equal(item["latents"][:, 0, 0], expected[f"item_frame_latent_value_{j}"])
        assert item["latents"].shape == (items.num_frames, grid[0] * grid[1], channels)
        retrieved = expected[f"item_retrieved_{j}"][:case["n_candidates"]]
        context = item["frame_indices"][1:case["num_non_padding_frames"]].tolist()
        assert sorted(candidates[retrieved].tolist(), reverse=True) == context


def test_worldmar_plucker_default_is_relative_to_the_target(worldmar_dir: Path) -> None:
    """Default: the per-frame relative map the reference intends (`plucker_sub_curr0`); compat: `dl_plucker_sub`."""
    data = load_file(worldmar_dir / "plucker_io.safetensors")
    meta = safe_open(str(worldmar_dir / "plucker_io.safetensors"), "pt").metadata()
    intrinsics = {"focal_length": float(meta["focal_length"]), "image_width": int(meta["image_width"]),
                  "image_height": int(meta["image_height"])}
    poses = data["poses"]
    episode = Episode(name="walk", actions=torch.zeros(len(poses), 25), poses=poses[:, 0],
                      frames=ArrayFrames(np.zeros((len(poses), 8, 8, 3), np.uint8)))
    correct = WorldMarItems([episode], points=torch.zeros(1, 3), **intrinsics)
    compat = WorldMarItems([episode], points=torch.zeros(1, 3), reference_compat=True, **intrinsics)
    for b in range(poses.shape[1]):
        torch.testing.assert_close(correct.plucker(poses[:, b]), data["plucker_sub_curr0"][:, b], atol=1e-4, rtol=0)
    torch.testing.assert_close(compat.plucker(data["dl_poses"]), data["dl_plucker_sub"], atol=1e-4, rtol=0)
    # Frames other than the target differ between the two modes; the target's map is the same.
    default_map = correct.plucker(data["dl_poses"])
    torch.testing.assert_close(default_map[0], data["dl_plucker_sub"][0], atol=1e-4, rtol=0)
    assert (default_map[1:] - data["dl_plucker_sub"][1:]).abs().amax() > 0.1


# ---------------------------------------------------------------- VPT mp4 + jsonl


def test_vpt_default_actions_follow_the_keymap_encoding(tmp_path: Path) -> None:
    ticks = [
        {"mouse": {"dx": 250.0, "dy": -40.25, "buttons": [0], "newButtons": [0]},
         "keyboard": {"keys": ["key.keyboard.w", "key.keyboard.unknown"]}, "hotbar": 0},
        {"mouse": {"dx": 3.0, "dy": 10.0, "buttons": [0, 2], "newButtons": []},
         "keyboard": {"keys": ["key.keyboard.left.shift"]}, "hotbar": 4},
        {"mouse": {"dx": -26.0, "dy": 0.0, "buttons": [0, 1], "newButtons": [0]},
         "keyboard": {"keys": []}, "hotbar": 4},
    ]
    rows = vpt_action_matrix(ticks)
    keymap = Keymap.load("minecraft")
    for row, tick in zip(rows, ticks, strict=True):
        expected = camera_value(keymap.camera_bins(tick["mouse"]["dx"], tick["mouse"]["dy"]))
        assert row[[PITCH_COLUMN, YAW_COLUMN]].tolist() == expected.tolist()
    # 250 px = 37.5 degrees -> clamped to the last bin; -40.25 px = -6.04 degrees -> bin 28.
    assert rows[0, YAW_COLUMN] == 1.0 and rows[0, PITCH_COLUMN] == pytest.approx(-0.3)
    # Stuck attack: the button held since the first tick counts only once it is pressed again (tick 2).
    assert rows[:, COLUMN["attack"]].tolist() == [0, 0, 1]
    assert rows[1, COLUMN["pickItem"]] == 1 and rows[2, COLUMN["use"]] == 1
    # The hotbar change to slot 4 (0-based) presses hotbar.5 once.
    assert rows[:, COLUMN["hotbar.5"]].tolist() == [0, 1, 0]
    assert rows[0, COLUMN["forward"]] == 1 and rows[1, COLUMN["sneak"]] == 1
    assert rows[0].nonzero().flatten().tolist() == [COLUMN["forward"], PITCH_COLUMN, YAW_COLUMN]  # "x" ignored
    compat = vpt_action_matrix(ticks, reference_compat=True)[:, [PITCH_COLUMN, YAW_COLUMN]]
    expected = torch.tensor([[-0.025, 0.15], [0.0, 0.0], [0.0, 0.0]], dtype=torch.float32)
    # Bitwise: truncation below 40 px gives +0.0 (an integer zero), never -0.0.
    assert torch.equal(compat.view(torch.int32), expected.view(torch.int32))


def test_vpt_episode_reads_mp4_frames_and_actions(tmp_path: Path) -> None:
    count = 24
    frames = synthetic_frames(count, 40, 60)
    jsonl = write_vpt_episode(tmp_path / "vpt", "demo-a", frames, ticks=count + 1)
    episode, = find_episodes(tmp_path / "vpt")
    assert episode.name == "demo-a" and episode.num_frames == count  # the extra tick has no frame
    assert episode.frames.size == (40, 60)
    ticks = read_vpt_jsonl(jsonl)[:count]
    assert torch.equal(episode.actions[1:], vpt_action_matrix(ticks)[:-1])
    assert torch.equal(episode.poses, vpt_poses(ticks))
    assert episode.gui_open.tolist() == [k % 7 == 3 for k in range(count)]
    order = [17, 3, 4, 23, 0, 17, 9]
    assert decoded_level(episode.frames.read(order)) == order
    chunks = list(episode.frames.iter_chunks(5, 16, 4))
    assert [len(c) for c in chunks] == [4, 4, 3]
    assert decoded_level(np.concatenate(chunks)) == list(range(5, 16))
    assert np.abs(np.concatenate(chunks).astype(int) - frames[5:16]).max() <= 6


def test_bad_input_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(vpt_tick(0, np.random.default_rng(0))) + "\n{\"mouse\": {\"dx\": 1}}\n")
    with pytest.raises(ConfigError, match=r"bad.jsonl:2: a VPT tick needs 'mouse' and 'keyboard'"):
        read_vpt_jsonl(path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no training episodes"):
        find_episodes(tmp_path / "empty")
    only_jsonl = write_vpt_episode(tmp_path / "novideo", "x", synthetic_frames(2, 8, 8), ticks=2)
    only_jsonl.with_suffix(".mp4").unlink()
    with pytest.raises(ConfigError, match=r"has no video x\.mp4"):
        find_episodes(only_jsonl, require_video=True)
    frames = synthetic_frames(3, 8, 8)
    metadata = np.array(json.dumps({"fps": 10}))
    np.savez_compressed(tmp_path / "packed.npz", frames=frames, actions=np.zeros((3, 2), np.float32),
                        poses=np.zeros((3, 5), np.float32), metadata=metadata)
    packed, = find_episodes(tmp_path / "packed.npz")  # compressed: frames are loaded instead of mapped
    assert np.array_equal(packed.frames.read([2, 1]), frames[[2, 1]]) and packed.fps == 10
    np.savez(tmp_path / "short.npz", frames=frames, actions=np.zeros((2, 2), np.float32),
             poses=np.zeros((3, 5), np.float32), metadata=metadata)
    with pytest.raises(ConfigError, match=r"short.npz: 'actions' is \(2, 2\) float32, expected 2-D float32 with 3"):
        find_episodes(tmp_path / "short.npz")


def test_worldmar_items_from_pixels_and_without_pose(tmp_path: Path) -> None:
    frames = synthetic_frames(12, 40, 60)
    write_vpt_episode(tmp_path / "vpt", "walk", frames, ticks=12, seed=3)
    episode, = find_episodes(tmp_path / "vpt")
    items = WorldMarItems([episode], num_mem_frames=2, num_prev_frames=2, prev_distance=3, memory_size=8,
                          memory_distance=20, num_points=2000, frame_size=(20, 30))
    assert len(items) == 11
    item = items[9]
    assert item["frames"].shape == (5, 3, 20, 30) and item["plucker"].shape == (5, 9, 16, 6)
    real = int(item["num_non_padding_frames"])
    indices = item["frame_indices"]
    assert indices[0] == 10 and (indices[real:] == -1).all() and (indices[1:real] < 10).all()
    assert (item["frames"][real:] == 0).all() and (item["plucker"][real:] == 0).all()
    assert torch.equal(item["action"], episode.actions[10])
    assert torch.equal(item["timestamps"], indices - 10)
    # Only the forced previous frame may be a GUI frame.
    assert all(not episode.gui_open[i] or i == 9 for i in indices[1:real].tolist())
    # Same index -> same draw; another epoch -> its own draw (the prev frames are random here).
    assert torch.equal(items[9]["frame_indices"], indices)
    draws = set()
    for epoch in range(6):
        items.set_epoch(epoch)
        draws.add(tuple(items[9]["frame_indices"].tolist()))
    assert len(draws) > 1
    episode.poses[4, 0] = float("nan")
    with pytest.raises(ConfigError, match="without a pose"):
        WorldMarItems([episode])


# ---------------------------------------------------------------- recordings and DIAMOND segments


def test_recording_episode_and_diamond_segments(tmp_path: Path) -> None:
    frames = synthetic_frames(6, 48, 64)
    npz = write_recording(tmp_path / "rec" / "atari" / "run1", frames, action_dim=4)
    episode, = find_episodes(tmp_path / "rec")
    assert episode.name == "atari/run1" and episode.num_frames == 6 and episode.fps == 15
    assert np.array_equal(episode.frames.read([5, 0]), frames[[5, 0]])
    assert isinstance(episode.frames.array, np.memmap)  # frames stay on disk until read
    assert episode.actions.argmax(1).tolist() == [0, 1, 2, 3, 0, 1]
    assert episode.rewards.tolist() == [0, 1, 0, 1, 0, 1] and episode.ends.tolist() == [False] * 5 + [True]
    assert episode.poses[:, 0].tolist() == list(range(6)) and npz.is_file()

    segments = DiamondSegments([episode], seq_length=3, frame_size=(32, 32), discrete_actions=True)
    assert len(segments) == 6
    first = segments[0]  # stop 1: two padding steps, then frame 0
    assert first["obs"].shape == (3, 3, 32, 32) and first["obs"].dtype == torch.float32
    assert first["mask_padding"].tolist() == [False, False, True]
    assert (first["obs"][:2] == 0).all()
    torch.testing.assert_close(first["obs"][2], to_model_frames(frames[:1], (32, 32))[0])
    assert first["act"].tolist() == [0, 0, 1] and first["segment"].tolist() == [0, -2, 1]
    last = segments[5]  # frames 3, 4, 5: act[t] is the action taken at frame t (the action of frame t + 1)
    assert last["act"].tolist() == [0, 1, 0] and last["act"].dtype == torch.int64
    assert last["rew"].tolist() == [0, 1, 0] and last["end"].tolist() == [0, 1, 0]
    assert last["trunc"].tolist() == [0, 0, 0] and last["mask_padding"].all()
    beyond = DiamondSegments([episode], seq_length=3, pad_beyond_end=True)
    assert len(beyond) == 8
    tail = beyond[7]
    assert tail["segment"].tolist() == [0, 5, 8] and tail["mask_padding"].tolist() == [True, False, False]
    assert tail["obs"].shape == (3, 3, 48, 64) and tail["act"].shape == (3, 4)
    batch = next(iter(DataLoader(segments, batch_size=4, shuffle=False)))
    assert batch["obs"].shape == (4, 3, 3, 32, 32) and batch["mask_padding"].shape == (4, 3)


# ---------------------------------------------------------------- latent cache and Oasis clips


class CrashingFrames(ArrayFrames):
    """Frames whose reader dies after `crash_after` chunks: an interrupted cache build."""

    def __init__(self, frames: np.ndarray, crash_after: int) -> None:
        super().__init__(frames)
        self.crash_after = crash_after

    def iter_chunks(self, start: int, stop: int, chunk: int):
        for number, frames in enumerate(super().iter_chunks(start, stop, chunk)):
            if number == self.crash_after:
                raise KeyboardInterrupt
            yield frames


def test_latent_cache_round_trip_and_resume(tmp_path: Path, vae: OasisVAE, capsys) -> None:
    height, width = vae.image_size
    vpt_frames = synthetic_frames(21, height, width)
    write_vpt_episode(tmp_path / "data", "demo", vpt_frames, ticks=21)
    rec_frames = synthetic_frames(9, height + 8, width + 4)  # another size: resized to the VAE's input
    write_recording(tmp_path / "data" / "rec", rec_frames, action_dim=25, with_rewards=False)
    episodes = find_episodes(tmp_path / "data")
    assert [ep.name for ep in episodes] == ["demo", "rec"]
    demo = episodes[0]
    pixels = demo.frames.read(range(demo.num_frames))
    demo.frames = CrashingFrames(pixels, crash_after=3)
    with pytest.raises(KeyboardInterrupt):
        build_latent_cache(episodes, vae, tmp_path / "cache", batch_size=4, shard_frames=8)
    partial = LatentCache(tmp_path / "cache")
    assert not partial.has("demo") and partial.index["episodes"]["demo"]["shards"] == [
        ["shards/000000.safetensors", 0, 8]]
    first_shard = (tmp_path / "cache" / "shards" / "000000.safetensors").stat().st_mtime_ns
    capsys.readouterr()
    demo.frames = ArrayFrames(pixels)
    cache = build_latent_cache(episodes, vae, tmp_path / "cache", batch_size=4, shard_frames=8)
    assert "encoding latents" in capsys.readouterr().err
    assert (tmp_path / "cache" / "shards" / "000000.safetensors").stat().st_mtime_ns == first_shard
    assert cache.episodes == ["demo", "rec"] and cache.num_frames("demo") == 21 and cache.num_frames("rec") == 9
    assert [s[1:] for s in cache.index["episodes"]["demo"]["shards"]] == [[0, 8], [8, 16], [16, 21]]
    assert cache.grid == vae.grid and cache.latent_dim == vae.latent_dim

    for episode, frames in ((demo, pixels), (episodes[1], rec_frames)):
        with torch.no_grad():
            mean, logvar = vae.encode(to_model_frames(frames, vae.image_size))
        order = [episode.num_frames - 1, 0, 3, 3, 8]
        got_mean, got_logvar = cache.read(episode.name, order)
        torch.testing.assert_close(got_mean, mean[order], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got_logvar, logvar[order], atol=1e-5, rtol=1e-5)

    rerun = build_latent_cache(episodes, vae, tmp_path / "cache", batch_size=4, shard_frames=8, progress=False)
    assert rerun.index == cache.index  # nothing left to encode
    with pytest.raises(ConfigError, match="another VAE or dtype"):
        build_latent_cache(episodes, vae, tmp_path / "cache", store_dtype=torch.float16, progress=False)


def test_oasis_clips_from_cache_and_pixels(tmp_path: Path, vae: OasisVAE) -> None:
    height, width = vae.image_size
    frames = synthetic_frames(10, height, width)
    write_recording(tmp_path / "data" / "run", frames, action_dim=25, with_rewards=False)
    episodes = find_episodes(tmp_path / "data")
    cache = build_latent_cache(episodes, vae, tmp_path / "cache", batch_size=3, progress=False)
    clips = OasisClips(episodes, num_frames=4, cache=cache, stride=2, max_noise_level=1000, seed=5)
    assert len(clips) == 4  # starts 0, 2, 4, 6
    item = clips[3]
    rows, cols = vae.grid
    assert item["latents"].shape == (4, vae.latent_dim, rows, cols)
    assert item["frame_indices"].tolist() == [6, 7, 8, 9]
    assert torch.equal(item["actions"], episodes[0].actions[6:10])
    with torch.no_grad():
        mean, _ = vae.encode(to_model_frames(frames[6:10]))
    # OasisSession.encode's layout: posterior mean * latent_scale, (T, C, h, w) from the row-major token grid.
    expected = (mean * clips.latent_scale).transpose(1, 2).reshape(4, -1, rows, cols)
    torch.testing.assert_close(item["latents"], expected, atol=1e-5, rtol=1e-5)
    levels = item["noise_levels"]
    assert levels.dtype == torch.int64 and levels.shape == (4,) and ((levels >= 0) & (levels < 1000)).all()
    assert torch.equal(clips[3]["noise_levels"], levels)
    clips.set_epoch(1)
    assert not torch.equal(clips[3]["noise_levels"], levels)

    pixels = OasisClips(episodes, num_frames=3, frame_size=(20, 30))
    assert len(pixels) == 8
    assert pixels[2]["frames"].shape == (3, 3, 20, 30) and "latents" not in pixels[2]
    sampled = OasisClips(episodes, num_frames=4, cache=cache, posterior="sample")
    assert not torch.equal(sampled[0]["latents"], clips[0]["latents"])
    loader = DataLoader(clips, batch_size=2, num_workers=2, shuffle=False)
    batches = list(loader)
    assert [b["latents"].shape for b in batches] == [(2, 4, vae.latent_dim, rows, cols)] * 2
    torch.testing.assert_close(batches[1]["latents"][1], item["latents"])
    with pytest.raises(ConfigError, match="no episode is long enough"):
        OasisClips(episodes, num_frames=11, cache=cache)


def test_latent_cache_cli_encodes_with_a_world_vae(tmp_path: Path, oasis_dir: Path, capsys) -> None:
    world = make_tiny_oasis_world(tmp_path / "world", oasis_dir)
    vae_kwargs = read_json(oasis_dir / "vae.json")["kwargs"]
    frames = synthetic_frames(5, vae_kwargs["input_height"], vae_kwargs["input_width"])
    write_recording(tmp_path / "data" / "run", frames, action_dim=25, with_rewards=False)
    out = tmp_path / "cache"
    args = ["--world", str(world), "--data", str(tmp_path / "data"), "--out", str(out), "--device", "cpu",
            "--offline", "--shard-frames", "2"]
    assert latent_cache_main(args) == 0
    assert "1 episodes, 5 frames" in capsys.readouterr().out
    cache = LatentCache(out)
    assert cache.index["vae"]["sha256"] and len(cache.index["episodes"]["run"]["shards"]) == 3
    assert latent_cache_main([*args[:3], str(tmp_path / "nothing"), *args[4:]]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: training data") and "\n" not in err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the encoder runs on the VAE's device)")
def test_latent_cache_encodes_on_the_gpu(tmp_path: Path, vae: OasisVAE) -> None:
    frames = synthetic_frames(6, *vae.image_size)
    write_recording(tmp_path / "data" / "run", frames, action_dim=25, with_rewards=False)
    episodes = find_episodes(tmp_path / "data")
    gpu = copy.deepcopy(vae).cuda()
    cache = build_latent_cache(episodes, gpu, tmp_path / "cache", batch_size=4, progress=False)
    with torch.no_grad():
        mean, _ = vae.encode(to_model_frames(frames))
    torch.testing.assert_close(cache.read("run", range(6))[0], mean, atol=1e-3, rtol=1e-3)
