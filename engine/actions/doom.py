"""The Doom action space: six buttons and one turn axis, as a (7,) float32 vector per tick.

Columns (`DOOM_ACTIONS`): forward, backward, strafe_left, strafe_right, attack, use are 0/1 buttons (> 0.5
counts as held); `turn` is this tick's yaw change as a fraction of `MAX_TURN_DEGREES` in [-1, 1], positive
= turn right (clockwise seen from above).

A tick is `FRAME_SKIP` game tics. ViZDoom applies `TURN_LEFT_RIGHT_DELTA` on every tic of a
`make_action(action, tics)` call ("the same action will be repeated for each tic", ViZDoom docs of
`make_action`), positive = right, and floors the per-tic degrees to whole Doom angle units of 360/65536
degrees (measured on vizdoom 1.3.2), so `to_game_buttons` spreads a tick's turn over its tics in whole units.
Keyboard turning is Doom's fast turn (1280 angle units per tic, 7.03 degrees), i.e. 14.0625 degrees per
tick of two tics; the mouse may turn up to twice that per tick.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from engine.errors import ConfigError

DOOM_ACTIONS: tuple[str, ...] = ("forward", "backward", "strafe_left", "strafe_right", "attack", "use", "turn")
BUTTONS: tuple[str, ...] = DOOM_ACTIONS[:-1]
TURN = DOOM_ACTIONS.index("turn")
NUM_ACTIONS = len(DOOM_ACTIONS)

GAME_BUTTONS: tuple[str, ...] = ("MOVE_FORWARD", "MOVE_BACKWARD", "MOVE_LEFT", "MOVE_RIGHT", "ATTACK", "USE",
                                 "TURN_LEFT_RIGHT_DELTA")
"""`vizdoom.Button` names, one per column of `DOOM_ACTIONS`, in the same order."""

FRAME_SKIP = 2
"""Game tics per tick (17.5 ticks/s at Doom's 35 tics/s) that the keyboard turn speed is tuned for."""
ANGLE_UNIT_DEGREES = 360 / 65536
DOOM_FAST_TURN_DEGREES = 1280 * ANGLE_UNIT_DEGREES
KEY_TURN_DEGREES = FRAME_SKIP * DOOM_FAST_TURN_DEGREES
MAX_TURN_DEGREES = 2 * KEY_TURN_DEGREES
ACTION_LIMIT = 100.0  # as every action space: values beyond it are garbage, not a bigger press
PSEUDO_BUTTONS: dict[str, float] = {"turn_left": -KEY_TURN_DEGREES, "turn_right": KEY_TURN_DEGREES}


def idle_action() -> np.ndarray:
    """No button held, no turn."""
    return np.zeros(NUM_ACTIONS, dtype=np.float32)


def encode(held: Iterable[str], turn_degrees: float = 0.0) -> np.ndarray:
    """Action vector from held button names (columns or "turn_left"/"turn_right") and a mouse turn in degrees
    (positive = right); the total turn is clamped to +-MAX_TURN_DEGREES."""
    action = idle_action()
    total = float(turn_degrees)
    for name in held:
        if name in PSEUDO_BUTTONS:
            total += PSEUDO_BUTTONS[name]
        elif name in BUTTONS:
            action[BUTTONS.index(name)] = 1.0
        else:
            raise ConfigError(f"unknown Doom button '{name}': expected one of "
                              f"{', '.join((*BUTTONS, *PSEUDO_BUTTONS))}")
    if not math.isfinite(total):
        raise ConfigError(f"Doom turn must be a finite number of degrees, got {turn_degrees!r}")
    action[TURN] = max(-1.0, min(1.0, total / MAX_TURN_DEGREES))
    return action


def validate(action: np.ndarray) -> np.ndarray:
    """The action as a (7,) float32 array; ConfigError for another shape or non-finite values."""
    array = np.asarray(action, dtype=np.float32)
    if array.shape != (NUM_ACTIONS,):
        raise ConfigError(f"a Doom action has {NUM_ACTIONS} values ({', '.join(DOOM_ACTIONS)}), "
                          f"got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ConfigError(f"a Doom action must be finite, got {array.tolist()}")
    if np.abs(array).max() > ACTION_LIMIT:
        raise ConfigError(f"Doom action values must lie within +-{ACTION_LIMIT:g} (buttons 0/1, turn -1..1), "
                          f"got {array.tolist()}")
    return array


def held_buttons(action: np.ndarray) -> list[str]:
    """Names of the buttons held in an action, in column order."""
    array = validate(action)
    return [name for name, value in zip(BUTTONS, array[:TURN], strict=True) if value > 0.5]


def turn_degrees(action: np.ndarray) -> float:
    """The tick's yaw change in degrees (positive = right), after clamping `turn` to [-1, 1]."""
    return float(np.clip(validate(action)[TURN], -1.0, 1.0)) * MAX_TURN_DEGREES


def describe(action: np.ndarray) -> str:
    """Short text for the HUD, e.g. "forward+strafe_left, turn +14.1°"; "idle" when nothing is pressed."""
    held = held_buttons(action)
    parts = ["+".join(held)] if held else []
    degrees = turn_degrees(action)
    if degrees != 0.0:
        parts.append(f"turn {degrees:+.3g}°")
    return ", ".join(parts) or "idle"


def to_game_buttons(action: np.ndarray, frame_skip: int = FRAME_SKIP) -> list[float]:
    """ViZDoom button values in `GAME_BUTTONS` order for each tic of a tick of `frame_skip` tics.

    The delta button carries the per-tic degrees: the tick's turn in whole angle units divided over its tics
    (exact when `frame_skip` divides it, as at the defaults; otherwise within frame_skip/2 units). A quarter
    unit is added because ViZDoom floors the value to whole units.
    """
    if frame_skip < 1:
        raise ConfigError(f"frame_skip must be >= 1, got {frame_skip}")
    units_per_tic = round(turn_degrees(action) / ANGLE_UNIT_DEGREES / frame_skip)
    delta = (units_per_tic + 0.25) * ANGLE_UNIT_DEGREES if units_per_tic else 0.0
    held = set(held_buttons(action))
    return [*(1.0 if name in held else 0.0 for name in BUTTONS), delta]


class DoomSpace:
    """The keymap's view of the Doom space: keys hold the six buttons and the two turn keys, the mouse turns
    (`camera.sensitivity` degrees per pixel of horizontal motion)."""

    name = "doom"
    discrete = False
    mouse_driven: tuple[str, ...] = ("turn",)

    def targets(self, variant: str = "") -> tuple[str, ...]:
        return (*BUTTONS, *PSEUDO_BUTTONS)

    def encode(self, held: Sequence[int], mouse_dx: float, mouse_dy: float, camera: Any) -> torch.Tensor:
        names = self.targets()
        return torch.from_numpy(encode([names[i] for i in held], mouse_dx * camera.sensitivity))

    def describe(self, action: Sequence[float]) -> str | None:
        return describe(np.asarray(action, dtype=np.float32)) if len(action) == NUM_ACTIONS else None


SPACE = DoomSpace()
