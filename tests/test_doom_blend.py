"""The Doom dream's blend of its frame with the recalled frames redrawn from the new pose: which pixels a redraw
reaches, the blend network's mixture, the training items, the dream with a blend network, and the blend stage
trained alone through the real trainer."""

from __future__ import annotations

import math

import pytest
import torch
import yaml
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

from engine.actions import doom as actions
from engine.core.config import WORLDS_DIR
from engine.core.loader import open_session
from engine.core.noise import SeededNoise
from engine.errors import ConfigError
from engine.families.doom.blend import MemoryBlend, blend_loss
from engine.families.doom.data import DoomItems
from engine.families.doom.depth import DEPTH_SCALE
from engine.families.doom.motion import FRICTION
from engine.families.doom.network import POSE_FEATURES, DoomWorldModel
from engine.families.doom.recall import Recall
from engine.families.doom.recipe import load_keeping_new_parts
from engine.families.doom.reproject import reproject, reproject_drawn
from engine.families.doom.world import DoomSampler, newest_view
from engine.train.config import load_train_config
from engine.train.data import find_episodes
from engine.train.trainer import train
from tests.doom_support import TINY_NETWORK, collect_recordings, tiny_doom_world

HEIGHT, WIDTH = 64, 80
BLENDING = {"depth_width": 8, "reproject_memory": True, "blend_width": 8}
NEWEST = BLENDING | {"blend_newest": True}  # the newest frame redrawn from the new pose is the blend's last slot


def pose(z: float = 0.0) -> torch.Tensor:
    return torch.tensor([0.0, 0.0, z, 0.0, 0.0])


def slot_poses(valid: list[bool]) -> torch.Tensor:
    """(1, m, POSE_FEATURES) relative-pose features with only the `valid` flag set."""
    features = torch.zeros(1, len(valid), POSE_FEATURES)
    features[0, :, -1] = torch.tensor(valid, dtype=torch.float32)
    return features


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    return collect_recordings(tmp_path_factory.mktemp("doom-blend"), episodes=1, ticks=120)


def test_the_redraw_says_which_pixels_a_recalled_pixel_with_depth_reached():
    frame = torch.rand(1, 3, HEIGHT, WIDTH) * 2 - 1
    depth = torch.full((1, HEIGHT, WIDTH), 200.0)
    depth[0, 40:, 30:50] = 0  # the weapon
    same, drawn = reproject_drawn(frame, depth, pose()[None], pose())
    assert torch.equal(same, reproject(frame, depth, pose()[None], pose()))
    assert drawn.shape == (1, 1, HEIGHT, WIDTH) and drawn.dtype == torch.bool
    assert not drawn[0, 0, 40:, 30:50].any() and drawn[0, 0, :40].all(), "everything with depth lands, the weapon not"
    _, backed = reproject_drawn(frame, depth, pose()[None], pose(-100.0))  # stepping back: the wall shrinks
    assert not backed[0, 0, :, 0].any() and backed[0, 0, HEIGHT // 2, WIDTH // 2], "the border is a hole"
    empty, none = reproject_drawn(frame[:0], depth[:0], pose()[None][:0], pose())
    assert empty.shape[0] == 0 and none.shape == (0, 1, HEIGHT, WIDTH)


def test_the_blend_mixes_its_sources_and_gives_empty_slots_nothing():
    torch.manual_seed(0)
    net = MemoryBlend(2, 8, POSE_FEATURES)
    frame = torch.rand(1, 3, HEIGHT, WIDTH) * 2 - 1
    memory = torch.rand(1, 6, HEIGHT, WIDTH) * 2 - 1
    drawn = torch.ones(1, 2, HEIGHT, WIDTH)
    assert torch.equal(net(frame, memory, drawn, slot_poses([False, False])), frame), "no memory: the model's frame"
    untrained = net(frame, memory, drawn, slot_poses([True, True]))
    assert (untrained - frame).abs().max() < 0.1, "an untrained blend shows the model's frame"
    with torch.no_grad():
        net.head.bias.copy_(torch.tensor([0.0, 0.0, -50.0]).repeat_interleave(4))
    half = net(frame, memory, drawn, slot_poses([True, True]))
    torch.testing.assert_close(half, (frame + memory[:, :3]) / 2, atol=1e-5, rtol=0)
    only_second = net(frame, memory, drawn, slot_poses([False, True]))
    sources = torch.stack([frame, memory[:, 3:]])
    assert (only_second >= sources.amin(0) - 1e-6).all() and (only_second <= sources.amax(0) + 1e-6).all()


def test_the_blend_learns_to_show_the_recalled_frame_where_it_is_right():
    torch.manual_seed(0)
    target = torch.rand(4, 3, HEIGHT, WIDTH) * 2 - 1
    frame = (target + torch.randn_like(target) * 0.3).clamp(-1, 1)  # a soft guess of the frame
    good, stale = target.clone(), torch.rand_like(target) * 2 - 1
    good[:, :, :, WIDTH // 2:] = stale[:, :, :, WIDTH // 2:]  # the recalled frame is right on its left half
    drawn = torch.ones(4, 2, HEIGHT, WIDTH)
    net = MemoryBlend(2, 8, POSE_FEATURES)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    poses = slot_poses([True, False]).expand(4, -1, -1)
    memory = torch.cat([good, torch.zeros_like(good)], 1)
    first = None
    for _ in range(80):
        loss, psnr = blend_loss(net, frame, memory, drawn, poses, target)
        first = psnr.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert psnr.item() > first + 3, (first, psnr.item())


def test_items_say_which_recalled_pixels_the_redraw_reached(recordings):
    episodes = find_episodes([str(recordings)])
    items = DoomItems(episodes, context=4, memory=2, recall=Recall(), pose_scale=256.0, memory_dropout=0.0,
                      reproject=True)
    plain = DoomItems(episodes, context=4, memory=2, recall=Recall(), pose_scale=256.0, memory_dropout=0.0)
    index = len(items) - 1
    episode, t = items.locate(index)
    recalled = items.memory_indices(episode, t)
    assert len(recalled) >= 1
    depth = items.depth(episode, recalled.tolist())
    raw = plain[index]["memory"].reshape(2, 3, HEIGHT, WIDTH)[: len(recalled)]
    _, drawn = reproject_drawn(raw, depth, episode.poses[recalled], episode.poses[t])
    item = items[index]
    assert item["memory_drawn"].shape == (2, HEIGHT, WIDTH)
    assert torch.equal(item["memory_drawn"][: len(recalled)], drawn[:, 0].float())
    assert not item["memory_drawn"][len(recalled):].any(), "empty slots have nothing drawn"
    assert "memory_drawn" not in plain[index]


def test_rollout_items_hold_what_an_open_loop_run_into_the_target_starts_from(recordings):
    episodes = find_episodes([str(recordings)])
    ticks, n = 3, 4
    items = DoomItems(episodes, context=n, memory=2, recall=Recall(), pose_scale=256.0, memory_dropout=0.0,
                      reproject=True, rollout=ticks)
    plain = DoomItems(episodes, context=n, memory=2, recall=Recall(), pose_scale=256.0, memory_dropout=0.0,
                      reproject=True)
    for index in (2, len(items) - 1):  # near the start (frames before it repeat the first) and late
        episode, t = items.locate(index)
        item, same = items[index], plain[index]
        assert all(torch.equal(item[key], same[key]) for key in same if key != "newest_poses"), \
            "the teacher-forced fields are unchanged"
        run = [max(0, t - ticks - 1 + k) for k in range(ticks + 2)]  # each tick's newest frame, then the target
        assert torch.equal(item["newest_poses"], episode.poses[run]) and torch.equal(same["newest_poses"],
                                                                                     episode.poses[[t - 1, t]])
        rows = [max(0, t - ticks - n + k) for k in range(n)]
        frames = torch.from_numpy(episode.frames.read(rows)).movedim(-1, 1).float() / 127.5 - 1
        torch.testing.assert_close(item["rollout_context"], frames.reshape(3 * n, HEIGHT, WIDTH), atol=1e-6, rtol=0)
        assert item["rollout_actions"].shape == (n + ticks, 7)
        assert torch.equal(item["rollout_actions"][ticks:], item["actions"]), "the last window leads into t"
        first = t - ticks - n + 1
        for k in range(n + ticks):
            expected = episode.actions[first + k].float() if first + k >= 0 else torch.zeros(7)
            assert torch.equal(item["rollout_actions"][k], expected)
    with pytest.raises(ConfigError, match="rollout must be >= 0"):
        DoomItems(episodes, context=n, memory=2, recall=Recall(), pose_scale=256.0, rollout=-1)


def test_a_blend_network_needs_redrawn_memory_and_starts_beside_earlier_weights():
    with pytest.raises(ConfigError, match="blend_width needs memory frames redrawn by depth"):
        DoomWorldModel(**TINY_NETWORK, depth_width=8, blend_width=8)
    old = DoomWorldModel(**TINY_NETWORK, depth_width=8, reproject_memory=True)
    new = DoomWorldModel(**TINY_NETWORK, **BLENDING)
    before = {k: v.clone() for k, v in new.blend_net.state_dict().items()}
    load_keeping_new_parts(new, {f"world_model.{k}": v for k, v in old.state_dict().items()}, "world_model.")
    assert all(torch.equal(new.state_dict()[k], v) for k, v in old.state_dict().items())
    assert all(torch.equal(new.blend_net.state_dict()[k], v) for k, v in before.items())


def test_the_dream_blends_its_frame_with_what_it_recalled(tmp_path):
    world = tiny_doom_world(tmp_path, network=BLENDING)
    session = open_session(str(world), device="cpu")
    model = session.model
    with torch.no_grad():  # walls 100 units away everywhere, no weapon; the blend takes the first recalled frame
        model.depth_net.head.weight.zero_()
        model.depth_net.head.bias.copy_(torch.tensor([math.log(100 / DEPTH_SCALE)] * 4 + [-10.0] * 4))
        model.blend_net.head.bias.copy_(torch.tensor([-50.0, 50.0, -50.0]).repeat_interleave(4))
    session.reset()
    walk, back, stand = actions.encode(["forward"]), actions.encode(["backward"]), actions.encode([])
    for action in [walk] * 8 + [back] * 8 + [stand] * 23:
        session.step(torch.from_numpy(action))
    frame = session.step(torch.from_numpy(stand)).frame
    assert session._recalled[0] >= 0, "frames older than min_age are recalled"
    drawn = session._drawn[0]
    assert drawn.any(), "the redraw reaches the new view"
    shown = frame.movedim(-1, 0).float() / 255 * 2 - 1
    recalled = session._memory[0]
    assert (shown[:, drawn] - recalled[:, drawn]).abs().max() <= 2 / 255 + 1e-6, "drawn pixels show the memory (to a level)"


def test_the_sampler_blends_only_with_a_blend_network_and_drawn_pixels():
    torch.manual_seed(0)
    model = DoomWorldModel(**TINY_NETWORK, **BLENDING).eval()
    sampler_cfg = OmegaConf.load(WORLDS_DIR / "doom.yaml").sampler
    with torch.no_grad():
        model.blend_net.head.bias.copy_(torch.tensor([-50.0, 50.0, -50.0]).repeat_interleave(4))
    context = torch.rand(2, 12, HEIGHT, WIDTH) * 2 - 1
    memory = torch.rand(2, 6, HEIGHT, WIDTH) * 2 - 1
    acts = torch.zeros(2, 4, 7)
    poses = slot_poses([True, True]).expand(2, -1, -1)
    drawn = torch.ones(2, 2, HEIGHT, WIDTH)
    plain = DoomSampler(model, sampler_cfg, SeededNoise(3)).denoise(context, memory, acts, poses)
    assert torch.equal(DoomSampler(model, sampler_cfg, SeededNoise(3)).sample(context, memory, acts, poses), plain)
    mixed = DoomSampler(model, sampler_cfg, SeededNoise(3)).sample(context, memory, acts, poses, drawn)
    assert mixed.shape == plain.shape == (2, 3, HEIGHT, WIDTH)
    assert (mixed - memory[:, :3]).abs().max() <= 2 / 255 + 1e-6, "the blend shows the first recalled frame"
    rows = [DoomSampler(model, sampler_cfg, SeededNoise(3)).denoise(context[k:k + 1], memory[k:k + 1],
                                                                    acts[k:k + 1], poses[k:k + 1]) for k in range(2)]
    assert torch.equal(rows[0], plain[:1]), "a batch row is made as a batch of one"


@pytest.mark.parametrize("config", ["doom_blend", "doom_blend_rollout"])
def test_the_blend_stages_train_the_blend_network_alone(recordings, tmp_path, config):
    earlier = NEWEST if config == "doom_blend_rollout" else {"depth_width": 8, "reproject_memory": True}
    old = DoomWorldModel(**TINY_NETWORK, **earlier)  # the stage before: 2 (no blend network) or 3
    weights = tmp_path / "earlier.safetensors"
    save_file({f"world_model.{k}": v.contiguous() for k, v in old.state_dict().items()}, str(weights))
    sizes = [f"model.world_model.{k}={v}" for k, v in {**TINY_NETWORK, **NEWEST}.items() if k != "frame_size"]
    cfg = load_train_config(config, [f"data.paths=[{recordings}]", f"output_dir={tmp_path / 'run'}",
                                     f"init.world_model={weights}", "train.steps=3", "train.batch_size=2",
                                     "train.checkpoint_every=3", "train.progress=false", *sizes])
    result = train(cfg)
    trained = load_file(str(result.checkpoint / "ema.safetensors"))
    assert all(torch.equal(trained[f"world_model.{k}"], v) for k, v in old.state_dict().items()
               if not k.startswith("blend_net.")), "the world model and the depth network stay as they were"
    start = old.blend_net or DoomWorldModel(**TINY_NETWORK, **NEWEST).blend_net
    assert any(not torch.equal(trained[f"world_model.blend_net.{k}"], v) for k, v in start.state_dict().items())
    metrics = [line for line in (result.run_dir / "metrics.jsonl").read_text().splitlines() if "blended_psnr" in line]
    assert metrics, "the blended and sampled PSNR are logged"
    network = yaml.safe_load(result.world.read_text())["networks"]["world_model"]
    assert network["blend_width"] == 8 and network["reproject_memory"] and network["blend_newest"]


def test_the_newest_frame_is_redrawn_from_the_new_pose_with_its_pose_features():
    frame = torch.rand(2, 3, HEIGHT, WIDTH) * 2 - 1
    depth = torch.full((2, HEIGHT, WIDTH), 100.0)
    poses = torch.stack([pose(), pose(50.0)])
    targets = torch.stack([pose(), pose(70.0)])  # the first stays, the second walks 20 units toward its wall
    view = newest_view(frame, depth, poses, targets, pose_scale=256.0)
    assert view.frame.shape == (2, 3, HEIGHT, WIDTH) and view.drawn.shape == (2, 1, HEIGHT, WIDTH)
    torch.testing.assert_close(view.frame[0], frame[0]), "from where it was seen, the frame is itself"
    assert view.drawn[0].all()
    nearer, _ = reproject_drawn(frame[1:], depth[1:], poses[1:], targets[1])
    assert torch.equal(view.frame[1:], nearer), "each row is redrawn to its own new pose"
    torch.testing.assert_close(view.features[:, 0], torch.tensor([[0.0, 0, 0, 0, 1, 1], [0, 0, -20 / 256, 0, 1, 1]]))


def test_with_blend_newest_the_sampler_also_mixes_the_redrawn_newest_frame_even_without_memory():
    torch.manual_seed(0)
    model = DoomWorldModel(**TINY_NETWORK, **NEWEST).eval()
    sampler_cfg = OmegaConf.load(WORLDS_DIR / "doom.yaml").sampler
    with torch.no_grad():  # sources: the model's frame, the 2 recalled frames, the newest frame: it takes the last
        model.blend_net.head.bias.copy_(torch.tensor([-50.0, -50.0, -50.0, 50.0]).repeat_interleave(4))
    context = torch.rand(1, 12, HEIGHT, WIDTH) * 2 - 1
    acts = torch.zeros(1, 4, 7)
    depth = torch.full((1, HEIGHT, WIDTH), 100.0)
    newest = newest_view(context[:, -3:], depth, pose()[None], pose(10.0)[None], 256.0)
    for valid in ([True, True], [False, False]):
        memory = torch.rand(1, 6, HEIGHT, WIDTH) * 2 - 1
        mixed = DoomSampler(model, sampler_cfg, SeededNoise(3)).sample(
            context, memory, acts, slot_poses(valid), torch.ones(1, 2, HEIGHT, WIDTH), newest)
        assert (mixed - newest.frame).abs().max() <= 2 / 255 + 1e-6, valid


def test_a_dream_that_blends_its_newest_frame_holds_still_when_the_player_does(tmp_path):
    world = tiny_doom_world(tmp_path, network=NEWEST)
    session = open_session(str(world), device="cpu")
    with torch.no_grad():  # walls 100 units away everywhere; the blend shows the newest frame redrawn
        session.model.depth_net.head.weight.zero_()
        session.model.depth_net.head.bias.copy_(torch.tensor([math.log(100 / DEPTH_SCALE)] * 4 + [-10.0] * 4))
        session.model.blend_net.head.bias.copy_(torch.tensor([-50.0, -50.0, -50.0, 50.0]).repeat_interleave(4))
    session.reset()
    stand = torch.from_numpy(actions.encode([]))
    first = session.step(stand).frame
    assert torch.equal(session.step(stand).frame, first), "standing still, the newest frame redrawn is itself"
    moved = session.step(torch.from_numpy(actions.encode(["forward"]))).frame
    assert not torch.equal(moved, first), "walking redraws it nearer"


def test_teacher_forcing_gives_the_motion_the_momentum_of_the_real_move(tmp_path):
    session = open_session(str(tiny_doom_world(tmp_path)), device="cpu")
    frames = torch.zeros(4, HEIGHT, WIDTH, 3, dtype=torch.uint8)
    poses = torch.stack([pose(4.0 * k) for k in range(4)])
    session.start_from(frames, torch.zeros(4, 7), poses)
    session.step(torch.from_numpy(actions.encode([])))  # the dream coasts on; the real player ran on faster
    session.force(frames[0], pose(22.0))
    moved = (22.0 - 12.0) / session.motion.frame_skip * FRICTION
    torch.testing.assert_close(session.motion.momentum, torch.tensor([0.0, moved]))
