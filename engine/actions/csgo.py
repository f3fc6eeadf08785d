"""The 51-dim CS:GO action vector DIAMOND's CS:GO model is conditioned on, built as the reference play loop does.

Layout: [0:11] keys (w, a, s, d, space, left ctrl, left shift, 1, 2, 3, r), [11] left click, [12] right click,
[13:36] one-hot mouse-x bin, [36:51] one-hot mouse-y bin. Held keys are taken in press order; a key that
would complete a forbidden pair (opposite directions, two weapons) is dropped. Mouse motion is clipped and
snapped to the nearest bin (ties to the first bin in list order, the smaller value); the arrow keys then
override the mouse with fixed camera motions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

KEYS: tuple[str, ...] = ("w", "a", "s", "d", "space", "left ctrl", "left shift", "1", "2", "3", "r")
CAMERA_KEYS: tuple[str, ...] = ("up", "down", "left", "right")
FORBIDDEN: tuple[frozenset[str], ...] = tuple(frozenset(pair) for pair in (
    ("w", "s"), ("a", "d"), ("1", "2"), ("1", "3"), ("2", "3"), ("up", "down"), ("left", "right")))
MOUSE_X_BINS: tuple[int, ...] = (-1000, -500, -300, -200, -100, -60, -30, -20, -10, -4, -2, 0, 2, 4, 10, 20, 30,
                                 60, 100, 200, 300, 500, 1000)
MOUSE_Y_BINS: tuple[int, ...] = (-200, -100, -50, -20, -10, -4, -2, 0, 2, 4, 10, 20, 50, 100, 200)
CAMERA_X = {"left": -60, "right": 60}
CAMERA_Y = {"up": -50, "down": 50}
LEFT_CLICK, RIGHT_CLICK = len(KEYS), len(KEYS) + 1
MOUSE_X_START = len(KEYS) + 2
MOUSE_Y_START = MOUSE_X_START + len(MOUSE_X_BINS)
NUM_ACTIONS = MOUSE_Y_START + len(MOUSE_Y_BINS)


def allowed_keys(pressed: Iterable[str]) -> list[str]:
    """Keymap keys in press order, without those that would complete a forbidden combination."""
    kept: list[str] = []
    for key in pressed:
        if (key not in KEYS and key not in CAMERA_KEYS) or key in kept:
            continue
        if any(pair <= {*kept, key} for pair in FORBIDDEN):
            continue
        kept.append(key)
    return kept


def snap(value: float, bins: Sequence[int]) -> int:
    """Clip to the bin range and take the nearest bin; a tie goes to the first (smaller) one."""
    value = min(max(value, bins[0]), bins[-1])
    return min(bins, key=lambda b: abs(b - value))


@dataclass(frozen=True)
class CSGOAction:
    """Processed input of one frame: allowed keys, snapped mouse motion (arrow keys applied) and clicks."""

    keys: tuple[str, ...]
    mouse_x: int
    mouse_y: int
    l_click: bool
    r_click: bool

    @classmethod
    def from_input(cls, keys: Iterable[str], mouse_x: float, mouse_y: float, l_click: bool,
                   r_click: bool) -> CSGOAction:
        """`mouse_x/y`: the rel of the frame's last mouse motion, already times the mouse multiplier."""
        kept = allowed_keys(keys)
        x, y = snap(mouse_x, MOUSE_X_BINS), snap(mouse_y, MOUSE_Y_BINS)
        for key in kept:
            x = CAMERA_X.get(key, x)
            y = CAMERA_Y.get(key, y)
        return cls(tuple(kept), x, y, bool(l_click), bool(r_click))

    def vector(self) -> torch.Tensor:
        """The 51-dim multi-hot float32 vector."""
        out = torch.zeros(NUM_ACTIONS)
        for key in self.keys:
            if key in KEYS:
                out[KEYS.index(key)] = 1
        out[LEFT_CLICK] = float(self.l_click)
        out[RIGHT_CLICK] = float(self.r_click)
        out[MOUSE_X_START + MOUSE_X_BINS.index(self.mouse_x)] = 1
        out[MOUSE_Y_START + MOUSE_Y_BINS.index(self.mouse_y)] = 1
        return out


def encode_csgo_action(keys: Iterable[str], mouse_x: float = 0.0, mouse_y: float = 0.0, l_click: bool = False,
                       r_click: bool = False) -> torch.Tensor:
    """Held keys (press order), mouse motion and clicks -> the 51-dim vector."""
    return CSGOAction.from_input(keys, mouse_x, mouse_y, l_click, r_click).vector()


CSGO_ACTIONS = ("up", "left", "down", "right", "jump", "crouch", "walk", "weapon1", "weapon2", "weapon3", "reload",
                "camera_up", "camera_down", "camera_left", "camera_right", "left_click", "right_click")
"""DIAMOND's CS:GO action names (its csgo/keymap.py): the 11 vector keys in vector order, the arrow-key camera
motions, the two clicks. A keymap binds inputs to these; the held ones, in this order, make the vector."""
CSGO_ACTION_KEYS = dict(zip(CSGO_ACTIONS, (*KEYS, *CAMERA_KEYS), strict=False))


class CsgoSpace:
    """DIAMOND's 51-dim CS:GO vector from held action names and the tick's mouse motion."""

    name = "csgo"
    discrete = False
    mouse_driven: tuple[str, ...] = ()

    def targets(self, variant: str = "") -> tuple[str, ...]:
        return CSGO_ACTIONS

    def encode(self, held: Sequence[int], mouse_dx: float, mouse_dy: float, camera: Any) -> torch.Tensor:
        """The player does not track press order, so of two opposite keys the one first in CSGO_ACTIONS wins
        (DIAMOND keeps the first pressed); `camera.sensitivity` is DIAMOND's mouse multiplier."""
        names = [CSGO_ACTIONS[column] for column in sorted(held)]
        dy = -mouse_dy if camera.invert_y else mouse_dy
        return encode_csgo_action([CSGO_ACTION_KEYS[name] for name in names if name in CSGO_ACTION_KEYS],
                                  mouse_dx * camera.sensitivity, dy * camera.sensitivity,
                                  l_click="left_click" in names, r_click="right_click" in names)

    def describe(self, action: Sequence[float]) -> str | None:
        return None


SPACE = CsgoSpace()
