"""Reference predictions a world model must beat: copy the last prompt frame, and the real frames under
actions shuffled in time (a world that ignores its actions scores the same with and without the shuffle)."""

from __future__ import annotations

import numpy as np
import torch

from engine.errors import ConfigError, EngineError

Array = np.ndarray | torch.Tensor


def copy_last(prompt: Array, horizon: int) -> Array:
    """The last prompt frame repeated `horizon` times: (horizon, H, W, 3), same type, dtype and device.

    `prompt` is one frame (H, W, 3) or the prompt frames (P, H, W, 3), of which the last is copied.
    """
    if horizon < 1:
        raise ConfigError(f"copy_last: horizon must be >= 1, got {horizon}")
    if prompt.ndim == 4:
        if prompt.shape[0] == 0:
            raise EngineError("copy_last: the prompt has no frames")
        prompt = prompt[-1]
    if prompt.ndim != 3:
        raise EngineError(f"copy_last: expected a frame (H, W, 3) or frames (P, H, W, 3), got {tuple(prompt.shape)}")
    if isinstance(prompt, torch.Tensor):
        return prompt.unsqueeze(0).repeat(horizon, 1, 1, 1)
    return np.repeat(prompt[None], horizon, axis=0)


def time_permutation(length: int, seed: int) -> np.ndarray:
    """A seeded permutation of range(length); for length > 1 never the identity (redrawn if it is)."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(length)
    while length > 1 and np.array_equal(perm, np.arange(length)):
        perm = rng.permutation(length)
    return perm


def shuffle_in_time(actions: Array, seed: int) -> Array:
    """The action rows (T, A) in a seeded random order (`time_permutation`); each row is unchanged."""
    perm = time_permutation(int(actions.shape[0]), seed)
    if isinstance(actions, torch.Tensor):
        return actions[torch.from_numpy(perm).to(actions.device)]
    return actions[perm]
