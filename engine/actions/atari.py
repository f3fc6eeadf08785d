"""Discrete Atari actions of DIAMOND's Atari-100k world models, as one-hot vectors.

DIAMOND (eloialonso/diamond, `src/envs/env.py`) plays `<Game>NoFrameskip-v4` with `full_action_space=False`:
the model's action i is entry i of the game's minimal action set, in the order of ALE's `Action` enum, and its
networks have one embedding row (and one policy logit) per entry. In the session API an action is a float
one-hot vector of that size, so recordings keep (T, A) float arrays; the all-zero vector means NOOP.

The minimal sets of the 26 Atari-100k games are listed below (the tests check them against ale-py); any
other ALE game is looked up in ale-py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from engine.errors import ConfigError

ALE_ACTIONS: tuple[str, ...] = (
    "noop", "fire", "up", "right", "left", "down", "upright", "upleft", "downright", "downleft",
    "upfire", "rightfire", "leftfire", "downfire", "uprightfire", "upleftfire", "downrightfire", "downleftfire",
)
"""ALE's full action set, in `ale_py.Action` order, with the lowercase names DIAMOND's keymap uses."""


def _subset(*names: str) -> tuple[str, ...]:
    return tuple(name for name in ALE_ACTIONS if name in names)


_MOVES_4 = ("noop", "up", "right", "left", "down")
_DIAGONALS = ("upright", "upleft", "downright", "downleft")

GAME_ACTIONS: dict[str, tuple[str, ...]] = {
    "Alien": ALE_ACTIONS,
    "Amidar": _subset(*_MOVES_4, "fire", "upfire", "rightfire", "leftfire", "downfire"),
    "Assault": _subset("noop", "fire", "up", "right", "left", "rightfire", "leftfire"),
    "Asterix": _subset(*_MOVES_4, *_DIAGONALS),
    "BankHeist": ALE_ACTIONS,
    "BattleZone": ALE_ACTIONS,
    "Boxing": ALE_ACTIONS,
    "Breakout": _subset("noop", "fire", "right", "left"),
    "ChopperCommand": ALE_ACTIONS,
    "CrazyClimber": _subset(*_MOVES_4, *_DIAGONALS),
    "DemonAttack": _subset("noop", "fire", "right", "left", "rightfire", "leftfire"),
    "Freeway": _subset("noop", "up", "down"),
    "Frostbite": ALE_ACTIONS,
    "Gopher": _subset("noop", "fire", "up", "right", "left", "upfire", "rightfire", "leftfire"),
    "Hero": ALE_ACTIONS,
    "Jamesbond": ALE_ACTIONS,
    "Kangaroo": ALE_ACTIONS,
    "Krull": ALE_ACTIONS,
    "KungFuMaster": _subset(*_MOVES_4, "downright", "downleft", "rightfire", "leftfire", "downfire",
                            "uprightfire", "upleftfire", "downrightfire", "downleftfire"),
    "MsPacman": _subset(*_MOVES_4, *_DIAGONALS),
    "Pong": _subset("noop", "fire", "right", "left", "rightfire", "leftfire"),
    "PrivateEye": ALE_ACTIONS,
    "Qbert": _subset("noop", "fire", "up", "right", "left", "down"),
    "RoadRunner": ALE_ACTIONS,
    "Seaquest": ALE_ACTIONS,
    "UpNDown": _subset("noop", "fire", "up", "down", "upfire", "downfire"),
}
"""Minimal action set of each Atari-100k game: the games `eloialonso/diamond` has checkpoints for."""

ATARI_100K_GAMES: tuple[str, ...] = tuple(GAME_ACTIONS)


def env_id(game: str) -> str:
    """The gymnasium id DIAMOND plays (ALE v4 without frame skip and without sticky actions)."""
    return f"{game}NoFrameskip-v4"


def minimal_action_names(game: str) -> tuple[str, ...]:
    """The game's minimal action set, lowercase, in ALE order; other games than the 26 are asked of ale-py."""
    if game in GAME_ACTIONS:
        return GAME_ACTIONS[game]
    import ale_py
    import gymnasium

    gymnasium.register_envs(ale_py)
    try:
        env = gymnasium.make(env_id(game), full_action_space=False)
    except gymnasium.error.Error:
        raise ConfigError(f"unknown Atari game '{game}': expected one of {', '.join(ATARI_100K_GAMES)} "
                          "(the games with DIAMOND checkpoints) or another ALE game name") from None
    try:
        return tuple(name.lower() for name in env.unwrapped.get_action_meanings())
    finally:
        env.close()


def num_actions(game: str) -> int:
    return len(minimal_action_names(game))


def one_hot(index: int | torch.Tensor, size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(size,) float32 one-hot of an action index (an int or a 0-d/1-element tensor, kept on its device)."""
    if isinstance(index, torch.Tensor):
        index = index.reshape(1).to(torch.int64)
        out = torch.zeros(size, device=device or index.device)
        return out.scatter_(0, index.to(out.device), 1.0)
    if not 0 <= index < size:
        raise ConfigError(f"action index {index} is outside the game's {size} actions")
    out = torch.zeros(size, device=device)
    out[index] = 1.0
    return out


def action_index(action: torch.Tensor) -> torch.Tensor:
    """The index of a one-hot action vector (A,) as a (1,) int64 tensor on its device; all zeros -> 0 (NOOP)."""
    return action.argmax().reshape(1)


class AtariSpace:
    """ALE's 18 actions, or a game's minimal set (`atari/<Game>`): one at a time, one-hot, chosen by key combos."""

    name = "atari"
    discrete = True
    mouse_driven: tuple[str, ...] = ()

    def targets(self, variant: str = "") -> tuple[str, ...]:
        return minimal_action_names(variant) if variant else ALE_ACTIONS

    def encode(self, held: Sequence[int], mouse_dx: float, mouse_dy: float, camera: Any) -> torch.Tensor:
        raise TypeError("the Atari space is discrete: the keymap's combos choose its one-hot action")

    def describe(self, action: Sequence[float]) -> str | None:
        return None  # the Atari world's HUD items name the action


SPACE = AtariSpace()
