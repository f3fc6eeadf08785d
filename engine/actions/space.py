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

ACTION_LIMIT = 100.0
"""Every space keeps its values within [-1, 1] (buttons 0/1, one-hot actions, normalised camera and turn); a value
beyond +-ACTION_LIMIT is not an action but a broken file or input."""

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


def check_action_values(values: torch.Tensor, where: str) -> torch.Tensor:
    """`values` (action rows or one action, on the host) if every value is finite and within +-ACTION_LIMIT."""
    if not torch.isfinite(values).all():
        raise ConfigError(f"{where}: actions must be finite numbers, found NaN or infinity")
    if values.numel() and values.abs().max() > ACTION_LIMIT:
        raise ConfigError(f"{where}: action values must lie within +-{ACTION_LIMIT:g} (the spaces use -1..1), "
                          f"found {values.abs().max().item():g}")
    return values
