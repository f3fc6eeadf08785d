"""The real Atari emulator behind the atari world: DIAMOND's preprocessing (fixture README, "Atari observations")
checked against the raw ALE screens and against gymnasium's AtariPreprocessing (the wrapper DIAMOND's is
derived from), and the games' minimal action sets against ale-py."""

from __future__ import annotations

import ale_py
import cv2
import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.wrappers import AtariPreprocessing

from engine.actions.atari import ATARI_100K_GAMES, GAME_ACTIONS, env_id, minimal_action_names
from engine.errors import ConfigError
from engine.families.diamond.ale_env import AtariEnv, AtariEnvSettings, collect_segment, to_model_frames

gym.register_envs(ale_py)
ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
SIZE = 64  # DIAMOND's frame size (config/env/atari.yaml)


def raw_env(game: str) -> gym.Env:
    return gym.make(env_id(game), full_action_space=False, frameskip=1, repeat_action_probability=0.0)


def test_minimal_action_sets_match_ale():
    assert len(ATARI_100K_GAMES) == 26
    for game in ATARI_100K_GAMES:
        ale = ale_py.ALEInterface()
        ale.loadROM(ale_py.roms.get_rom_path(gym.spec(env_id(game)).kwargs["game"]))
        assert GAME_ACTIONS[game] == tuple(action.name.lower() for action in ale.getMinimalActionSet()), game
    assert minimal_action_names("SpaceInvaders") == ("noop", "fire", "right", "left", "rightfire", "leftfire")
    with pytest.raises(ConfigError, match="unknown Atari game 'NoSuchGame'"):
        minimal_action_names("NoSuchGame")


def test_step_repeats_the_action_and_max_pools_the_last_two_screens():
    """Replays the same seed on a raw frameskip-1 emulator: reset no-ops, 4 frames per step, max of frames 3 and 4,
    INTER_AREA to 64x64 RGB uint8."""
    env, raw = AtariEnv(AtariEnvSettings("Breakout", size=SIZE)), raw_env("Breakout")
    obs = env.reset(seed=7)
    raw.reset(seed=7)
    ale = raw.unwrapped.ale
    for _ in range(int(raw.unwrapped.np_random.integers(1, 31))):
        raw.step(0)
    first = ale.getScreenRGB()
    np.testing.assert_array_equal(obs, cv2.resize(first, (SIZE, SIZE), interpolation=cv2.INTER_AREA))
    rng = np.random.default_rng(0)
    for _ in range(40):
        action = int(rng.integers(env.num_actions))
        before = ale.getEpisodeFrameNumber()
        screens = []
        for _ in range(4):
            raw.step(action)
            screens.append(ale.getScreenRGB())
        step = env.step(action)
        assert ale.getEpisodeFrameNumber() - before == 4
        assert env.ale.getEpisodeFrameNumber() == ale.getEpisodeFrameNumber()
        expected = cv2.resize(np.maximum(screens[2], screens[3]), (SIZE, SIZE), interpolation=cv2.INTER_AREA)
        assert step.obs.shape == (SIZE, SIZE, 3) and step.obs.dtype == np.uint8
        np.testing.assert_array_equal(step.obs, expected)
        assert not (step.terminated or step.truncated)
    env.close()
    raw.close()


def test_matches_gymnasium_atari_preprocessing_through_life_losses_and_game_over():
    """Seeded random play until game over: frames, rewards, ends and life losses agree with gymnasium's
    wrapper (RGB, frame_skip 4, noop_max 30, no end on life loss), including the early stop inside a step."""
    env = AtariEnv(AtariEnvSettings("Breakout", size=SIZE))
    reference = AtariPreprocessing(raw_env("Breakout"), noop_max=30, frame_skip=4, screen_size=SIZE,
                                   terminal_on_life_loss=False, grayscale_obs=False)
    ours, _ = env.reset(seed=3), None
    theirs, _ = reference.reset(seed=3)
    np.testing.assert_array_equal(ours, theirs)
    rng = np.random.default_rng(3)
    life_losses, lives = 0, env.ale.lives()
    for _ in range(5000):
        action = int(rng.integers(env.num_actions))
        step = env.step(action)
        obs, reward, terminated, truncated, _ = reference.step(action)
        np.testing.assert_array_equal(step.obs, obs)
        assert (step.reward, step.terminated, step.truncated) == (reward, terminated, truncated)
        assert step.life_loss == (env.ale.lives() < lives)
        life_losses += step.life_loss
        lives = env.ale.lives()
        if terminated or truncated:
            break
    assert terminated and life_losses >= 4
    env.close()
    reference.close()


def test_model_frames_and_spawn_segment():
    frames = np.array([[[[0, 128, 255]]]], dtype=np.uint8)
    model = to_model_frames(frames)
    assert model.shape == (1, 3, 1, 1)
    assert torch.equal(model.flatten(), torch.tensor([0, 128, 255], dtype=torch.uint8).div(255).mul(2).sub(1))
    env = AtariEnv(AtariEnvSettings("Pong", size=16))
    taken = []

    def policy(obs: np.ndarray) -> int:
        taken.append(obs)
        return len(taken) % env.num_actions

    segment = collect_segment(env, length=4, policy=policy, seed=5, warmup_steps=2)
    assert segment.frames.shape == (4, 16, 16, 3) and segment.frames.dtype == np.uint8
    assert segment.actions.tolist() == [3, 4, 5, 0]  # actions taken at frames 2..4 of the episode, then NOOP
    np.testing.assert_array_equal(segment.frames[:3], np.stack(taken[2:5]))
    again = AtariEnv(AtariEnvSettings("Pong", size=16))
    first = again.reset(seed=5)
    np.testing.assert_array_equal(first, taken[0])
    env.close()
    again.close()
