"""Depth in the Doom dream: the geometry of `reproject` on synthetic views, the depth network, the training items,
the dream's recall and walls with a depth network, and fine-tuning a world model from before the depth network."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from engine.actions import doom as actions
from engine.core.loader import open_session
from engine.errors import ConfigError
from engine.families.doom.data import DoomItems
from engine.families.doom.depth import DEPTH_SCALE, DepthNet, depth_loss
from engine.families.doom.motion import (
    FAR,
    WALL_FRAMES,
    WALL_RADIUS,
    DoomMotion,
    horizon_depth,
    seen_through,
    wall_points,
)
from engine.families.doom.network import DoomWorldModel
from engine.families.doom.recall import Recall
from engine.families.doom.recipe import load_keeping_new_parts
from engine.families.doom.reproject import reproject, view_axes
from engine.families.doom.world import to_uint8
from engine.recordings import SegmentWriter
from engine.train.config import load_train_config
from engine.train.data import find_episodes
from engine.train.data.recordings import load_recording_episode
from engine.train.trainer import train
from tests.doom_support import TINY_NETWORK, collect_recordings, tiny_doom_world

HEIGHT, WIDTH = 64, 80
FOCAL = WIDTH / 2


def striped(depth: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A view whose every column has its own colour, at one planar depth (a wall square to the view)."""
    columns = torch.linspace(-1, 1, WIDTH)
    frame = torch.stack([columns.expand(HEIGHT, WIDTH), -columns.expand(HEIGHT, WIDTH),
                         torch.linspace(-1, 1, HEIGHT)[:, None].expand(HEIGHT, WIDTH)])[None]
    return frame, torch.full((1, HEIGHT, WIDTH), depth)


def pose(x: float = 0.0, z: float = 0.0, yaw: float = 0.0, feet: float = 0.0) -> torch.Tensor:
    return torch.tensor([x, feet, z, 0.0, yaw])


def source_column(out: torch.Tensor, frame: torch.Tensor, column: int, row: int = HEIGHT // 2) -> int:
    """Which column of `frame` the pixel (row, column) of `out` shows (by its colour)."""
    return int((frame[0, 0, row] - out[0, 0, row, column]).abs().argmin())


def test_the_same_pose_gives_the_frame_back():
    frame, depth = striped(200.0)
    depth[0, 50:, 30:50] = 0  # the weapon: no depth
    same = reproject(frame, depth, pose(10, 20, 30)[None], pose(10, 20, 30))
    assert torch.allclose(same, frame, atol=1e-6), "every pixel lands on itself (the mean of its sub-pixels)"


def test_turning_moves_columns_as_the_planar_projection_does():
    frame, depth = striped(300.0)
    turned = reproject(frame, depth, pose()[None], pose(yaw=10.0))
    for column in (20, 40, 60):
        angle = math.atan((column + 0.5 - FOCAL) / FOCAL) + math.radians(10.0)
        expected = FOCAL + FOCAL * math.tan(angle) - 0.5
        assert abs(source_column(turned, frame, column) - expected) <= 1.0


def test_walking_halfway_to_a_wall_doubles_it_about_the_centre_and_height_shifts_rows():
    frame, depth = striped(200.0)
    nearer = reproject(frame, depth, pose()[None], pose(z=100.0))  # yaw 0 looks along +z
    for offset in (-30, -12, 12, 30):
        column = int(FOCAL + offset)
        assert abs(source_column(nearer, frame, column) - (FOCAL + (column + 0.5 - FOCAL) / 2 - 0.5)) <= 1.0
    raised = reproject(frame, depth, pose()[None], pose(feet=50.0))  # eye 50 units up: the wall slides down
    shift = FOCAL * 50 / 200
    row = 20
    shown = int((frame[0, 2, :, 0] - raised[0, 2, row, 40]).abs().argmin())
    assert abs(shown - (row - shift)) <= 1.0


def test_pixels_without_depth_stay_and_unreached_pixels_keep_the_recalled_ones():
    frame, depth = striped(200.0)
    depth[0, 40:, 30:50] = 0
    out = reproject(frame, depth, pose()[None], pose(z=50.0))
    assert torch.equal(out[0, :, 40:, 30:50], frame[0, :, 40:, 30:50]), "no depth: kept where it is"
    backed = reproject(frame, depth, pose()[None], pose(z=-100.0))  # stepping back: the wall shrinks
    assert torch.equal(backed[0, :, :, 0], frame[0, :, :, 0]), "the border nothing reaches keeps its pixels"
    two = reproject(torch.cat([frame, -frame]), depth.expand(2, -1, -1), torch.stack([pose(), pose()]), pose(z=50.0))
    assert torch.equal(two[0], out[0]) and torch.equal(two[1], reproject(-frame, depth, pose()[None], pose(z=50.0))[0])


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    return collect_recordings(tmp_path_factory.mktemp("doom-depth"), episodes=1, ticks=120)


def test_the_depth_network_learns_the_games_depth(recordings):
    episode = find_episodes([str(recordings)])[0]
    frames = torch.from_numpy(episode.frames.read(range(0, 120, 10))).movedim(-1, 1).float() / 127.5 - 1
    depth = torch.from_numpy(episode.depth.read(range(0, 120, 10))).float() * episode.info["depth_units"]
    torch.manual_seed(0)
    net = DepthNet(16)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        loss, relative = depth_loss(net, frames, depth)
        first = relative.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert relative.item() < 0.5 * first, (first, relative.item())
    predicted = net.depth(frames)
    assert predicted.shape == depth.shape and (predicted[depth == 0] == 0).float().mean() > 0.5, "the weapon"


def test_items_reproject_the_recalled_frames_by_their_recorded_depth(recordings):
    episodes = find_episodes([str(recordings)])
    plain = DoomItems(episodes, context=4, memory=2, recall=Recall(), pose_scale=256.0, memory_dropout=0.0)
    items = DoomItems(episodes, context=4, memory=2, recall=Recall(), pose_scale=256.0, memory_dropout=0.0,
                      reproject=True)
    index = len(items) - 1
    episode, t = items.locate(index)
    recalled = items.memory_indices(episode, t)
    assert len(recalled) >= 1
    item, raw = items[index], plain[index]
    depth = items.depth(episode, [*recalled.tolist(), t])
    expected = reproject(raw["memory"].reshape(2, 3, HEIGHT, WIDTH)[: len(recalled)], depth[:-1],
                         episode.poses[recalled], episode.poses[t])
    assert torch.equal(item["memory"].reshape(2, 3, HEIGHT, WIDTH)[: len(recalled)], expected)
    assert torch.equal(item["target_depth"], depth[-1]) and item["target_depth"].max() > 0
    episode.depth = None
    with pytest.raises(ConfigError, match="no 'depth' buffer"):
        DoomItems([episode], context=4, memory=2, recall=Recall(), pose_scale=256.0, reproject=True)


def test_the_dream_recalls_frames_redrawn_from_the_new_pose(tmp_path):
    world = tiny_doom_world(tmp_path, network={"depth_width": 8, "reproject_memory": True})
    session = open_session(str(world), device="cpu")
    with torch.no_grad():  # a depth network that sees walls 100 units away everywhere (and no weapon)
        session.model.depth_net.head.weight.zero_()
        session.model.depth_net.head.bias.copy_(torch.tensor([math.log(100 / DEPTH_SCALE)] * 4 + [-10.0] * 4))
    session.reset()
    walk, back, stand = actions.encode(["forward"]), actions.encode(["backward"]), actions.encode([])
    for action in [walk] * 8 + [back] * 8 + [stand] * 24:  # out and back: the first frames are near and old
        session.step(torch.from_numpy(action))
    picked = [int(n) for n in session._recalled if n >= 0]
    assert picked, "frames older than min_age are recalled"
    slots = [int((session.bank.frame_index[: len(session.bank)] == n).nonzero()[0]) for n in picked]
    raw, poses = session.bank.latents[slots], session.bank.poses[slots]
    expected = reproject(raw, session.model.depth_net.depth(raw), poses, session.pose)
    assert torch.equal(session._memory[: len(picked)], expected)
    assert not torch.equal(expected, raw), "seen from elsewhere, the recalled frames are redrawn"
    newest = session.bank.latents[session._last_slot]
    walls = wall_points(horizon_depth(session.model.depth_net.depth(newest[None])[0]), session.pose)
    assert torch.equal(session.motion.walls[-WIDTH:], walls), "the next moves meet the walls the newest frame shows"


def test_a_dreamed_frame_adds_walls_and_only_a_real_one_drops_those_it_sees_beyond(tmp_path):
    world = tiny_doom_world(tmp_path, network={"depth_width": 8, "reproject_memory": True})
    session = open_session(str(world), device="cpu")
    with torch.no_grad():  # every frame shows walls 100 units away (and no weapon)
        session.model.depth_net.head.weight.zero_()
        session.model.depth_net.head.bias.copy_(torch.tensor([math.log(100 / DEPTH_SCALE)] * 4 + [-10.0] * 4))
    session.reset()
    forward, _ = view_axes(session.pose[4])
    nearer = session.pose[[0, 2]] + 50 * forward  # a wall point 50 units ahead, which every view sees beyond
    session.motion.walls[-WIDTH - 1] = nearer
    session.step(torch.from_numpy(actions.encode([])))
    assert torch.equal(session.motion.walls[-2 * WIDTH - 1], nearer), "a dreamed frame drops no wall"
    session.force(to_uint8(session.bank.latents[session._last_slot]), session.pose)
    assert session.motion.walls[-2 * WIDTH - 1].eq(FAR).all(), "a real frame drops the walls it sees beyond"


def test_depth_alone_trains_the_depth_network_and_leaves_the_world_model_as_it_was(recordings, tmp_path):
    old = DoomWorldModel(**TINY_NETWORK)
    weights = tmp_path / "old.safetensors"
    save_file({f"world_model.{k}": v.contiguous() for k, v in old.state_dict().items()}, str(weights))
    sizes = [f"model.world_model.{k}={v}" for k, v in TINY_NETWORK.items() if k != "frame_size"]
    cfg = load_train_config("doom_depth", [f"data.paths=[{recordings}]", f"output_dir={tmp_path / 'run'}",
                                           f"init.world_model={weights}", "model.world_model.depth_width=8",
                                           "train.steps=3", "train.batch_size=2", "train.checkpoint_every=3",
                                           "train.progress=false", *sizes])
    result = train(cfg)
    trained = load_file(str(result.checkpoint / "ema.safetensors"))
    assert all(torch.equal(trained[f"world_model.{k}"], v) for k, v in old.state_dict().items())
    before = DoomWorldModel(**TINY_NETWORK, depth_width=8).depth_net
    assert any(not torch.equal(trained[f"world_model.depth_net.{k}"], v) for k, v in before.state_dict().items())
    world = yaml.safe_load(result.world.read_text())
    network = world["networks"]["world_model"]
    assert network["depth_width"] == 8 and network["reproject_memory"], "the run's world plays as shipped"
    with pytest.raises(ConfigError, match="reproject_memory needs a depth network"):
        DoomWorldModel(**TINY_NETWORK, reproject_memory=True)


def test_fine_tuning_starts_a_depth_network_beside_weights_from_before_it():
    old = DoomWorldModel(**TINY_NETWORK)
    new = DoomWorldModel(**TINY_NETWORK, depth_width=8)
    before = {k: v.clone() for k, v in new.depth_net.state_dict().items()}
    load_keeping_new_parts(new, {f"world_model.{k}": v for k, v in old.state_dict().items()}, "world_model.")
    assert all(torch.equal(new.state_dict()[k], v) for k, v in old.state_dict().items())
    assert all(torch.equal(new.depth_net.state_dict()[k], v) for k, v in before.items())
    with pytest.raises(Exception, match="does not fit"):
        load_keeping_new_parts(old, {k: v for k, v in new.state_dict().items()})


def test_the_walls_of_a_view_are_its_columns_nearest_depth_at_the_horizon_in_the_map():
    depth = torch.full((HEIGHT, WIDTH), 500.0)
    depth[HEIGHT // 2 - 2:HEIGHT // 2 + 2, 38:42] = 60.0  # a pillar at eye height
    depth[:8, :] = 10.0  # far above the horizon: a ceiling, not a wall in the way
    depth[:, 1] = 0.0  # no depth (the weapon)
    nearest = horizon_depth(depth)
    assert nearest[39] == 60.0 and nearest[60] == 500.0
    assert nearest[1] == FAR and nearest[38] == FAR, "no wall where there is no depth or a depth edge"
    pose = torch.tensor([100.0, 0.0, 200.0, 0.0, 90.0])  # looking along +x
    points = wall_points(nearest, pose)
    assert points.shape == (WIDTH, 2)
    assert torch.allclose(points[39], torch.tensor([160.0, 200.0 - 60.0 * (39.5 - FOCAL) / FOCAL]), atol=1e-4)
    assert points[38].eq(FAR).all()
    behind_the_pillar, on_the_far_wall = torch.tensor([[400.0, 200.0]]), torch.tensor([[600.0, 200.0]])
    elsewhere = torch.tensor([[0.0, 200.0], [400.0, 1000.0]])  # behind the view, outside its field
    view = torch.full((WIDTH,), 500.0)
    assert seen_through(behind_the_pillar, view, pose).all(), "a view that sees beyond a wall point drops it"
    assert not seen_through(torch.cat([on_the_far_wall, *elsewhere[:, None]]), view, pose).any()


def test_a_real_view_that_sees_beyond_a_wall_drops_it_and_a_dreamed_one_does_not():
    near, far = torch.full((HEIGHT, WIDTH), 60.0), torch.full((HEIGHT, WIDTH), 500.0)
    kept = {}
    for carve in (True, False):
        motion = DoomMotion(torch.tensor([0.0, 0.0, 0.0, 0.0, 90.0]), 2, torch.device("cpu"))
        motion.see(near)
        motion.see(far, carve=carve)
        kept[carve] = int((motion.walls[:, 0] < FAR).sum())
    assert kept[True] == WIDTH and kept[False] == 2 * WIDTH


def test_the_dream_pose_stops_at_a_wall_and_slides_along_it():
    """The player is a box against the walls the motion saw: into a wall head-on it stops, at an angle it keeps
    the move along the wall, and a wall point already in the box (an error of the depth) does not hold it."""
    ahead = torch.full((HEIGHT, WIDTH), 100.0)  # a wall square to the view, 100 units ahead, the view along +x
    start = torch.tensor([0.0, 0.0, 0.0, 0.0, 90.0])
    walk = torch.from_numpy(actions.encode(["forward"]))
    motion = DoomMotion(start, 2, torch.device("cpu"))
    motion.see(ahead)
    for _ in range(60):
        pose = motion.step(walk)
    assert 100 - WALL_RADIUS - 1 <= pose[0] < 100 - WALL_RADIUS and abs(pose[2]) < 1e-3
    assert motion.momentum.abs().max() < 1e-3, "a blocked move keeps no momentum"
    assert motion.walls.shape == (WALL_FRAMES * WIDTH, 2)
    assert motion.step(torch.from_numpy(actions.encode(["backward"])))[0] < pose[0], "it can walk away"
    slanted = DoomMotion(torch.tensor([0.0, 0.0, 0.0, 0.0, 60.0]), 2, torch.device("cpu"))
    slanted.reset(torch.tensor([-300.0, 0.0, 0.0, 0.0, 90.0]))
    slanted.see(torch.full((HEIGHT, WIDTH), 400.0))  # the same wall seen from farther: z from -400 to 400
    slanted.reset()
    for _ in range(30):  # walking at 30 degrees to it
        pose = slanted.step(walk)
    assert 100 - WALL_RADIUS - 1 <= pose[0] < 100 - WALL_RADIUS and pose[2] > 100, "it slides along the wall"
    stuck = DoomMotion(torch.tensor([95.0, 0.0, 0.0, 0.0, -90.0]), 2, torch.device("cpu"))
    stuck.walls = torch.tensor([[100.0, 0.0]])
    assert stuck.step(walk)[0] < 95, "out of a wall it stands in"
    free = DoomMotion(start, 2, torch.device("cpu"))
    free.see(torch.zeros(HEIGHT, WIDTH))
    assert torch.equal(free.step(walk), DoomMotion(start, 2, torch.device("cpu")).step(walk)), "no depth, no wall"


def test_a_wall_ahead_stops_the_dream_pose_where_the_real_player_stops():
    from engine.families.vizdoom.game import DEPTH_UNITS, DoomGame, DoomSettings

    with DoomGame(DoomSettings(depth=True)) as game:
        game.new_episode(0)
        for _ in range(2):  # from the spawn, this heading meets a wall after ~230 map units at an angle
            game.step(actions.encode([], actions.KEY_TURN_DEGREES))
        start = torch.from_numpy(game.pose().copy())
        plain, walled = (DoomMotion(start, 2, torch.device("cpu")) for _ in range(2))
        walk = torch.from_numpy(actions.encode(["forward"]))
        for _ in range(60):
            walled.see(torch.from_numpy(game.depth()).float() * DEPTH_UNITS)
            game.step(walk.numpy())
            through, held = plain.step(walk), walled.step(walk)
        real = torch.from_numpy(game.pose().copy())
    assert (real[[0, 2]] - start[[0, 2]]).norm() < 300, "the real player stopped at the wall"
    assert (through[[0, 2]] - real[[0, 2]]).norm() > 300, "without the walls the dream walks through it"
    assert (held[[0, 2]] - real[[0, 2]]).norm() < 2 * WALL_RADIUS, "with them it stops and slides where the player does"


@pytest.mark.parametrize(("depth", "message"), [
    (np.zeros((32, 40), np.uint8), r"'depth' is \(3, 32, 40\), expected one \(H, W\) = \(64, 80\) buffer per frame"),
    (np.zeros((64, 80, 3), np.uint8), r"'depth' is \(3, 64, 80, 3\) uint8, expected \(T, H, W\) uint8"),
])
def test_a_recording_with_a_bad_depth_buffer_is_one_line_naming_it(tmp_path, depth, message):
    stem = tmp_path / "bad"
    with SegmentWriter(stem, world="doom-game", fps=17.5) as writer:
        for _ in range(3):
            writer.append(np.zeros((HEIGHT, WIDTH, 3), np.uint8), np.zeros(7, np.float32), pose=np.zeros(5),
                          extra={"depth": depth})
    with pytest.raises(ConfigError, match=f"recording {stem}.npz: {message}"):
        load_recording_episode(stem.with_suffix(".npz"))
