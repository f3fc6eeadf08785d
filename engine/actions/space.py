"""What the generic keymap needs of an action space, and the registry of spaces (one line each).

A space module (`engine/actions/<name>.py`) defines `SPACE`, an object with:

- `name`, and `discrete`: one action of its names at a time, one-hot, chosen by held key combinations (the
  keymap's `combos`), as DIAMOND's Atari play mode does; else keys and buttons hold named targets at once.
- `targets(variant) -> names`: what a keymap binds to. `variant` is the part after the `/` of a world's
  `actions.space` (`atari/Breakout`: the game's minimal action set).
- `mouse_driven`: targets only the mouse drives (a keymap may not bind them to a key).
- `encode(held, mouse_dx, mouse_dy, camera) -> (A,) float32`: continuous spaces only; `held` are indices into
  `targets()` in target order, the mouse motion is the tick's, `camera` the keymap's `CameraSettings`.
- `describe(action) -> str | None`: the action in words for the HUD (None: the world's HUD items say it).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any, Protocol

import torch

from engine.errors import ConfigError

SPACES: dict[str, str] = {
    "vpt": "engine.actions.vpt",
    "atari": "engine.actions.atari",
    "csgo": "engine.actions.csgo",
    "doom": "engine.actions.doom",
}


class ActionSpace(Protocol):
    name: str
    discrete: bool
    mouse_driven: tuple[str, ...]

    def targets(self, variant: str = "") -> tuple[str, ...]: ...

    def encode(self, held: Sequence[int], mouse_dx: float, mouse_dy: float, camera: Any) -> torch.Tensor: ...

    def describe(self, action: Sequence[float]) -> str | None: ...


def split_space(space: str) -> tuple[str, str]:
    """`atari/Breakout` -> ("atari", "Breakout"); `vpt` -> ("vpt", "")."""
    name, _, variant = space.partition("/")
    return name, variant


def action_space(name: str) -> ActionSpace:
    """The space registered as `name` (without a variant)."""
    if name not in SPACES:
        raise ConfigError(f"action space '{name}' is unknown (expected one of {', '.join(SPACES)})")
    return importlib.import_module(SPACES[name]).SPACE
