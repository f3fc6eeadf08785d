"""The real Atari emulator (ale-py, which ships the ROMs) with DIAMOND's observation preprocessing.

As eloialonso/diamond `src/envs/env.py` + `src/envs/atari_preprocessing.py` (derived from gym's
AtariPreprocessing, Machado et al. 2018) make it: `<Game>NoFrameskip-v4`, minimal action set, no sticky
actions; each step repeats the action `frame_skip` (4) times and max-pools the RGB screens of the last two
of those frames; an episode end inside the repeat stops early and leaves the pooling buffers as they were;
the pooled 210x160 screen is resized to size x size with OpenCV's INTER_AREA, RGB uint8. Reset runs 1 to
`noop_max` (30) no-ops drawn from the emulator's own seeded RNG, then pools the screen with a zero frame.
Life losses are reported, not turned into episode ends (the play script's test env).

Frames for the model: `to_model_frames` applies DIAMOND's `u8 / 255 * 2 - 1` and HWC -> CHW.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from engine.actions.atari import env_id, minimal_action_names


@dataclass(frozen=True)
class AtariEnvSettings:
    game: str
    size: int = 64
    frame_skip: int = 4
    noop_max: int = 30


@dataclass(frozen=True)
class AtariStep:
    obs: np.ndarray  # (size, size, 3) uint8, the preprocessed frame
    reward: float  # summed over the repeated frames, unclipped
    terminated: bool
    truncated: bool
    life_loss: bool


class AtariEnv:
    """One emulator, stepped with indices into the game's minimal action set."""

    def __init__(self, settings: AtariEnvSettings) -> None:
        import ale_py
        import cv2
        import gymnasium

        if settings.frame_skip < 1 or settings.size < 1 or settings.noop_max < 0:
            raise ValueError(f"bad Atari env settings {settings}")
        gymnasium.register_envs(ale_py)
        self.settings = settings
        self._resize = cv2.resize
        self._area = cv2.INTER_AREA
        self.action_names = minimal_action_names(settings.game)
        self.env = gymnasium.make(env_id(settings.game), full_action_space=False, frameskip=1,
                                  repeat_action_probability=0.0, render_mode="rgb_array")
        self.ale = self.env.unwrapped.ale
        shape = self.env.observation_space.shape
        self._screens = (np.zeros(shape, dtype=np.uint8), np.zeros(shape, dtype=np.uint8))
        self.lives = 0

    @property
    def num_actions(self) -> int:
        return len(self.action_names)

    def reset(self, seed: int | None = None) -> np.ndarray:
        """New episode after 1..noop_max no-ops; returns the first preprocessed frame."""
        self.env.reset(seed=seed)
        noop_max = self.settings.noop_max
        noops = int(self.env.unwrapped.np_random.integers(1, noop_max + 1)) if noop_max > 0 else 0
        for _ in range(noops):
            _, _, terminated, truncated, _ = self.env.step(0)
            if terminated or truncated:
                self.env.reset(seed=seed)
        self.lives = self.ale.lives()
        self.ale.getScreenRGB(self._screens[0])
        self._screens[1].fill(0)
        return self._observation()

    def step(self, action: int) -> AtariStep:
        skip = self.settings.frame_skip
        total, terminated, truncated, life_loss = 0.0, False, False, False
        for t in range(skip):
            _, reward, terminated, truncated, _ = self.env.step(action)
            total += float(reward)
            if self.ale.lives() < self.lives:
                life_loss = True
                self.lives = self.ale.lives()
            if terminated or truncated:
                break
            if t == skip - 2:
                self.ale.getScreenRGB(self._screens[1])
            elif t == skip - 1:
                self.ale.getScreenRGB(self._screens[0])
        return AtariStep(self._observation(), total, bool(terminated), bool(truncated), life_loss)

    def _observation(self) -> np.ndarray:
        """Max-pool the two buffers (in place, as the reference does) and resize with INTER_AREA."""
        if self.settings.frame_skip > 1:
            np.maximum(self._screens[0], self._screens[1], out=self._screens[0])
        size = self.settings.size
        return np.asarray(self._resize(self._screens[0], (size, size), interpolation=self._area), dtype=np.uint8)

    def close(self) -> None:
        self.env.close()


def to_model_frames(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float32 (..., 3, H, W) in [-1, 1], with DIAMOND's op order."""
    u8 = torch.as_tensor(np.ascontiguousarray(frames))
    return u8.div(255).mul(2).sub(1).movedim(-1, -3).contiguous()


Policy = Callable[[np.ndarray], int]


@dataclass(frozen=True)
class Segment:
    """`frames` (T, H, W, 3) uint8 oldest first; `actions` (T,) int64, actions[t] taken at frames[t] (the last
    one is a NOOP placeholder: the world model's first tick replaces it with the player's action)."""

    frames: np.ndarray
    actions: np.ndarray


def collect_segment(env: AtariEnv, length: int, policy: Policy, seed: int, warmup_steps: int = 0) -> Segment:
    """Reset with `seed`, play `warmup_steps` steps, then keep the next `length` frames and the actions between them.

    An episode that ends before the segment is complete starts over (the emulator keeps its RNG state)."""
    if length < 1 or warmup_steps < 0:
        raise ValueError(f"need length >= 1 and warmup_steps >= 0, got {length} and {warmup_steps}")
    obs = env.reset(seed)
    frames, actions = [obs], []
    while len(frames) < warmup_steps + length:
        action = int(policy(obs))
        step = env.step(action)
        if step.terminated or step.truncated:
            obs = env.reset()
            frames, actions = [obs], []
            continue
        obs = step.obs
        frames.append(obs)
        actions.append(action)
    actions.append(0)
    return Segment(frames=np.stack(frames[-length:]), actions=np.asarray(actions[-length:], dtype=np.int64))
