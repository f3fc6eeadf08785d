"""The real Doom behind the doom-game world: the action space, the settings, seeded episodes, the pose mapping
against ViZDoom's own game variables, turning and walking, frames, and the scripted exploration policy."""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from collections.abc import Iterator

import numpy as np
import pytest

from engine.actions import doom
from engine.errors import ConfigError, EngineError


@pytest.fixture(autouse=True, scope="module")
def _outside_the_checkout(tmp_path_factory):
    """The vizdoom process makes an empty `./_vizdoom/` folder wherever it is started: not in the checkout."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path_factory.mktemp("vizdoom-cwd"))
        yield


needs_vizdoom = pytest.mark.skipif(importlib.util.find_spec("vizdoom") is None,
                                   reason="vizdoom is not installed (pip install vizdoom)")
ANGLE_TOLERANCE = 0.02  # degrees: a few of Doom's 360/65536-degree angle units


def wrap(degrees: float) -> float:
    return (degrees + 180.0) % 360.0 - 180.0


# --- the action space (no game needed) ---

def test_encode_keys_and_mouse():
    action = doom.encode(["forward", "strafe_left", "turn_right"])
    assert action.dtype == np.float32 and action.shape == (len(doom.DOOM_ACTIONS),)
    assert action.tolist()[:6] == [1, 0, 1, 0, 0, 0]
    assert doom.turn_degrees(action) == pytest.approx(doom.KEY_TURN_DEGREES)
    assert doom.KEY_TURN_DEGREES == 2 * 1280 / 65536 * 360  # Doom's fast turn over two tics
    assert doom.turn_degrees(doom.encode(["turn_left"], -5.0)) == pytest.approx(-doom.KEY_TURN_DEGREES - 5.0)
    assert doom.encode([], 1000.0)[doom.TURN] == 1.0 and doom.encode(["turn_left"], -50.0)[doom.TURN] == -1.0
    assert not doom.idle_action().any()
    with pytest.raises(ConfigError, match="unknown Doom button 'jump'"):
        doom.encode(["jump"])


def test_describe_and_validate():
    assert doom.describe(doom.idle_action()) == "idle"
    assert doom.describe(doom.encode(["forward", "strafe_left"], 12.0)) == "forward+strafe_left, turn +12°"
    assert doom.describe(doom.encode(["attack", "turn_left"])) == "attack, turn -14.1°"
    with pytest.raises(ConfigError, match="7 values"):
        doom.validate(np.zeros(6))
    with pytest.raises(ConfigError, match="finite"):
        doom.validate(np.array([0, 0, 0, 0, 0, 0, np.nan]))


def test_game_buttons_spread_the_turn_over_the_tics():
    assert len(doom.GAME_BUTTONS) == len(doom.DOOM_ACTIONS)
    buttons = doom.to_game_buttons(doom.encode(["forward", "use"], doom.MAX_TURN_DEGREES))
    assert buttons[:6] == [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    # ViZDoom floors the per-tic degrees to whole angle units: each tic gets 2560 units and a quarter
    assert math.floor(buttons[6] / doom.ANGLE_UNIT_DEGREES) == 2560
    assert math.floor(doom.to_game_buttons(doom.encode(["turn_left"]))[6] / doom.ANGLE_UNIT_DEGREES) == -1280
    assert doom.to_game_buttons(doom.idle_action()) == [0.0] * 7


# --- settings ---

@needs_vizdoom
def test_settings_defaults_and_wads():
    from engine.families.vizdoom.game import DoomSettings

    settings = DoomSettings()
    assert (settings.map, settings.frame_size, settings.render_resolution, settings.frame_skip) == \
        ("E1M1", (64, 80), "RES_320X256", 2)
    assert settings.wad_files[0].name == "freedoom1.wad" and settings.wad_files[1] is None
    assert DoomSettings.from_mapping({"wad": "freedoom2"}).map == "MAP01"
    scenario = DoomSettings.from_mapping({"wad": "my_way_home", "frame_size": [32, 40]})
    assert scenario.wad_files[0].name == "freedoom2.wad" and scenario.wad_files[1].name == "my_way_home.wad"
    assert scenario.map == "MAP01" and scenario.frame_size == (32, 40)


@needs_vizdoom
@pytest.mark.parametrize(("data", "message"), [
    ({"frame_skip": "two"}, "doom.yaml: game.frame_skip must be an integer >= 1, got 'two'"),
    ({"frame_skip": 0}, "doom.yaml: game.frame_skip must be an integer >= 1, got 0"),
    ({"episode_timeout": -1}, "doom.yaml: game.episode_timeout must be an integer >= 0, got -1"),
    ({"monsters": "no"}, "doom.yaml: game.monsters must be true or false, got 'no'"),
    ({"frame_size": [64]}, "doom.yaml: game.frame_size must be [height, width] with two integers >= 1"),
    ({"render_resolution": "320x256"}, "doom.yaml: game.render_resolution must be a vizdoom ScreenResolution"),
    ({"render_resolution": "RES_333X222"}, "doom.yaml: game.render_resolution 'RES_333X222' is not a vizdoom"),
    ({"map": "E9M9"}, "doom.yaml: game.map must be one of the WAD's maps (E1M1, "),
    ({"wad": "nowhere"}, "doom.yaml: game.wad must be freedoom1, freedoom2, a vizdoom scenario (basic, "),
    ({"fps": 35}, "doom.yaml: unknown key game.fps (expected one of depth, episode_timeout, frame_size"),
])
def test_settings_errors_name_source_key_and_value(data, message):
    from engine.families.vizdoom.game import DoomSettings

    with pytest.raises(ConfigError) as error:
        DoomSettings.from_mapping(data, source="doom.yaml")
    assert str(error.value).startswith(message)


def test_missing_vizdoom_is_one_line(monkeypatch):
    from engine.families.vizdoom.game import DoomSettings

    monkeypatch.setitem(sys.modules, "vizdoom", None)  # `import vizdoom` now raises ImportError
    with pytest.raises(EngineError, match=r"^vizdoom is not installed for this platform \(pip install vizdoom; ") as error:
        DoomSettings()
    assert "\n" not in str(error.value)


# --- the game ---

@pytest.fixture(scope="module")
def game() -> Iterator:
    if importlib.util.find_spec("vizdoom") is None:
        pytest.skip("vizdoom is not installed (pip install vizdoom)")
    from engine.families.vizdoom.game import DoomGame

    with DoomGame() as doom_game:
        yield doom_game


def play(game, seed: int, ticks: int, start_offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Frames and poses of a fixed action script with walking, turning and shooting (bullet puffs are random)."""
    game.new_episode(seed, start_offset=start_offset)
    frames, poses = [game.frame().copy()], [game.pose()]
    for tick in range(ticks):
        held = ["forward", "attack"] if tick % 4 == 0 else ["forward"]
        game.step(doom.encode(held, 6.0 * math.sin(tick / 4)))
        frames.append(game.frame().copy())
        poses.append(game.pose())
    return np.stack(frames), np.stack(poses)


def test_same_seed_same_episode(game):
    frames, poses = play(game, 7, 30)
    again_frames, again_poses = play(game, 7, 30)
    assert np.array_equal(frames, again_frames) and np.array_equal(poses, again_poses)
    other_frames, other_poses = play(game, 8, 30)
    # without monsters the seed only changes a few pixels (bullet puffs, lights), never the walk itself
    assert not np.array_equal(frames, other_frames)
    assert np.array_equal(poses, other_poses)


def test_start_offset_walks_to_seeded_start_points(game):
    starts = []
    for seed in (1, 2, 3):
        game.new_episode(seed, start_offset=100)
        starts.append(game.pose())
    game.new_episode(2, start_offset=100)
    assert np.array_equal(game.pose(), starts[1])
    game.new_episode(2)
    origin = game.pose()
    assert all(np.hypot(*(start - origin)[[0, 2]]) > 64 for start in starts)
    assert len({tuple(start[[0, 2]].round()) for start in starts}) == 3
    with pytest.raises(ConfigError, match="seed"):
        game.new_episode(-1)


def test_pose_is_the_engine_variables_remapped(game):
    import vizdoom

    variable = vizdoom.GameVariable
    game.new_episode(0)
    for tick in range(12):
        game.step(doom.encode(["forward", "strafe_right"] if tick % 2 else ["forward"], 9.0))
    x, y, z, pitch, yaw = game.pose().tolist()
    raw = game.game
    assert x == pytest.approx(raw.get_game_variable(variable.POSITION_X))
    assert y == pytest.approx(raw.get_game_variable(variable.POSITION_Z))
    assert z == pytest.approx(raw.get_game_variable(variable.POSITION_Y))
    assert pitch == pytest.approx(raw.get_game_variable(variable.PITCH))
    assert wrap(yaw - (90.0 - raw.get_game_variable(variable.ANGLE))) == pytest.approx(0.0, abs=1e-4)
    assert -180.0 < yaw <= 180.0


def test_one_full_turn_tick_turns_max_degrees_right(game):
    import vizdoom

    game.new_episode(0)  # the very first tick already acts (episodes start after the level's dead tics)
    angle = game.game.get_game_variable(vizdoom.GameVariable.ANGLE)
    yaw = float(game.pose()[4])
    game.step(doom.encode([], doom.MAX_TURN_DEGREES))
    assert wrap(float(game.pose()[4]) - yaw) == pytest.approx(doom.MAX_TURN_DEGREES, abs=ANGLE_TOLERANCE)
    turned = wrap(game.game.get_game_variable(vizdoom.GameVariable.ANGLE) - angle)
    assert turned == pytest.approx(-doom.MAX_TURN_DEGREES, abs=ANGLE_TOLERANCE)  # Doom's ANGLE is counter-clockwise
    yaw = float(game.pose()[4])
    game.step(doom.encode(["turn_left"]))
    assert wrap(float(game.pose()[4]) - yaw) == pytest.approx(-doom.KEY_TURN_DEGREES, abs=ANGLE_TOLERANCE)


def test_forward_moves_along_the_yaw(game):
    from engine.families.vizdoom.game import yaw_direction

    game.new_episode(0)
    game.step(doom.encode([], 20.0))
    start = game.pose()
    for _ in range(8):
        game.step(doom.encode(["forward"]))
    end = game.pose()
    assert end[4] == start[4]
    moved = (end - start)[[0, 2]]
    assert np.linalg.norm(moved) > 60
    assert moved @ yaw_direction(float(end[4])) / np.linalg.norm(moved) > 0.999


def test_frames_are_rgb_at_frame_size_and_move(game):
    game.new_episode(0)
    first = game.frame().copy()
    assert first.shape == (64, 80, 3) and first.dtype == np.uint8
    assert first.std() > 10 and len(np.unique(first.reshape(-1, 3), axis=0)) > 50
    screen = game.game.get_state().screen_buffer  # 320x256 RGB: the frame is the mean of each 4x4 block
    assert screen.shape == (256, 320, 3)
    assert np.abs(screen.reshape(64, 4, 80, 4, 3).mean(axis=(1, 3)) - first).max() <= 0.5
    game.step(doom.encode(["turn_right"]))
    assert np.abs(game.frame().astype(int) - first).mean() > 5


@needs_vizdoom
def test_depth_buffer_is_the_planar_depth_at_frame_size():
    from engine.families.vizdoom.game import DEPTH_UNITS, DoomGame, DoomSettings

    with DoomGame(DoomSettings(depth=True)) as doom_game:
        doom_game.new_episode(0)
        depth = doom_game.depth()
        assert depth.shape == (64, 80) and depth.dtype == np.uint8
        screen = doom_game.game.get_state().depth_buffer
        assert np.abs(screen.reshape(64, 4, 80, 4).mean(axis=(1, 3)) - depth).max() <= 0.5
        # the floor beside the weapon: planar depth is the same across a row and grows toward the horizon;
        # 41 units of eye height at a focal length of 40 pixels put the bottom row 41 * 40 / 32 units away
        floor = depth[52:, :12].astype(float)
        assert (floor.std(axis=1) < 0.6).all() and (np.diff(floor.mean(axis=1)) <= 0).all()
        assert abs(floor[-1].mean() * DEPTH_UNITS - 41 * 40 / 32) < 0.15 * 41 * 40 / 32
        doom_game.step(doom.encode(["turn_right"]))
        assert np.abs(doom_game.depth().astype(int) - depth).mean() > 1, "the depth follows the view"
    with DoomGame() as no_depth:
        no_depth.new_episode(0)
        with pytest.raises(EngineError, match="depth: true"):
            no_depth.depth()


def test_timeout_ends_the_episode_and_the_last_frame_stays():
    if importlib.util.find_spec("vizdoom") is None:
        pytest.skip("vizdoom is not installed (pip install vizdoom)")
    from engine.families.vizdoom.game import DoomGame, DoomSettings

    with DoomGame(DoomSettings(episode_timeout=20, frame_skip=3, render_resolution="RES_160X120")) as short:
        with pytest.raises(EngineError, match="new_episode"):
            short.step(doom.idle_action())
        short.new_episode(0)
        yaw = float(short.pose()[4])
        short.step(doom.encode([], doom.MAX_TURN_DEGREES))  # three tics of 1707 units: within 3 units
        assert wrap(float(short.pose()[4]) - yaw) == pytest.approx(doom.MAX_TURN_DEGREES, abs=ANGLE_TOLERANCE)
        ticks = 1
        while not short.is_episode_finished():
            last = short.frame().copy()
            short.step(doom.idle_action())
            ticks += 1
        assert ticks == 7  # 20 tics at 3 per tick
        assert np.array_equal(short.frame(), last)
        with pytest.raises(EngineError, match="episode is over"):
            short.step(doom.idle_action())


def test_look_down_raises_doom_pitch(tmp_path):
    """The pose keeps Doom's PITCH as is because positive PITCH already looks down, as the project wants."""
    vizdoom = pytest.importorskip("vizdoom")
    raw = vizdoom.DoomGame()
    raw.set_doom_game_path(os.path.join(os.path.dirname(vizdoom.__file__), "freedoom1.wad"))
    raw.set_doom_map("E1M1")
    raw.set_screen_resolution(vizdoom.ScreenResolution.RES_160X120)
    raw.set_window_visible(False)
    raw.set_available_buttons([vizdoom.Button.LOOK_DOWN])
    raw.set_episode_start_time(10)
    raw.set_doom_config_path(str(tmp_path / "_vizdoom.ini"))
    raw.init()
    try:
        raw.new_episode()
        raw.make_action([1.0], 2)
        assert raw.get_game_variable(vizdoom.GameVariable.PITCH) > 2.0
    finally:
        raw.close()


# --- the policies ---

def test_explore_policy_walks_and_revisits(game):
    from engine.families.vizdoom.explore import ExplorePolicy, RandomPolicy, exploration_stats

    def walk(policy_type: type, ticks: int) -> tuple[np.ndarray, np.ndarray]:
        game.new_episode(0)
        policy, poses, actions = policy_type(0), [game.pose()], []
        for _ in range(ticks):
            actions.append(policy.act(poses[-1], game.frame()))
            game.step(actions[-1])
            poses.append(game.pose())
        return np.stack(poses), np.stack(actions)

    poses, actions = walk(ExplorePolicy, 300)
    stats = exploration_stats(poses)
    assert stats.cells >= 15 and stats.revisits >= 2 and stats.still_fraction < 0.15
    assert np.hypot(*np.diff(poses[:, [0, 2]], axis=0).T).sum() > 2000
    assert actions[:, doom.BUTTONS.index("use")].any()
    assert np.array_equal(walk(ExplorePolicy, 300)[1], actions)  # seeded: the same walk again
    random_actions = walk(RandomPolicy, 100)[1]
    assert np.array_equal(walk(RandomPolicy, 100)[1], random_actions)
    assert len(np.unique(random_actions, axis=0)) > 5


def test_exploration_stats_counts_revisits_after_the_gap():
    from engine.families.vizdoom.explore import exploration_stats

    out = [[10.0 + 8 * t, 0.0, 10.0, 0.0, 90.0] for t in range(40)]  # walking east
    back = [[p[0], 0.0, 10.0, 0.0, -90.0] for p in reversed(out)]
    again = out[:16]
    stats = exploration_stats(np.array(out + back + again))
    assert stats.cells == 6  # x from 10 to 322: cells 0..5 of 64 units
    assert stats.revisits == 3  # cells 0, 1, 2 entered facing east again, 70+ ticks after; the walk back faces west
    assert stats.still_fraction == pytest.approx(2 / 95)  # the two turnarounds repeat a position
