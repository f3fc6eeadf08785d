"""pygame events -> what the player holds (keys, buttons, mouse motion) and player commands.

The window thread writes the state; the inference thread samples it once at the start of each tick.
A key or button pressed and released between two samples still reaches the next tick, and mouse
motion accumulates until sampled, so no input is lost however long a tick takes.
"""

from __future__ import annotations

import enum
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pygame
import torch

from engine.actions.keymap import MOUSE_BUTTON_NAMES, Keymap


class Command(enum.Enum):
    QUIT = "quit"
    PAUSE = "pause"
    STEP = "step"
    RESET = "reset"
    HUD = "hud"
    CONTROLS = "controls"
    FULLSCREEN = "fullscreen"
    RECORD = "record"
    SCREENSHOT = "screenshot"


# Player controls; these keys never reach the world's keymap. `e` steps only while paused.
COMMAND_KEYS = {
    "q": Command.QUIT, ".": Command.PAUSE, "return": Command.RESET, "enter": Command.RESET,
    "h": Command.HUD, "f1": Command.CONTROLS, "f11": Command.FULLSCREEN, ",": Command.RECORD,
    "f12": Command.SCREENSHOT,
}
STEP_KEY = "e"

CONTROLS = (
    ("mouse", "look around (click the window to capture it)"),
    ("Esc", "release the mouse"),
    (".", "pause / resume"),
    ("e", "one step while paused"),
    ("Enter", "reset to the prompt"),
    (",", "start / stop recording"),
    ("h", "HUD on / off"),
    ("F1", "this help on / off"),
    ("F11", "fullscreen"),
    ("F12", "screenshot"),
    ("q", "quit"),
)


@dataclass(frozen=True)
class InputSample:
    """What the player did since the previous sample; times are time.perf_counter() seconds."""

    keys: frozenset[str]
    buttons: frozenset[str]
    dx: float
    dy: float
    first_event_time: float | None
    sample_time: float


class InputState:
    """Held keys/buttons and accumulated mouse motion, shared between the window and inference threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held_keys: set[str] = set()
        self._held_buttons: set[str] = set()
        self._tapped_keys: set[str] = set()
        self._tapped_buttons: set[str] = set()
        self._dx = self._dy = 0.0
        self._first_event: float | None = None

    def _touch(self) -> None:
        if self._first_event is None:
            self._first_event = time.perf_counter()

    def key(self, name: str, down: bool) -> None:
        self._press(self._held_keys, self._tapped_keys, name, down)

    def button(self, name: str, down: bool) -> None:
        self._press(self._held_buttons, self._tapped_buttons, name, down)

    def _press(self, held: set[str], tapped: set[str], name: str, down: bool) -> None:
        with self._lock:
            self._touch()
            if down:
                held.add(name)
                tapped.add(name)
            else:
                held.discard(name)

    def move(self, dx: float, dy: float) -> None:
        with self._lock:
            self._touch()
            self._dx += dx
            self._dy += dy

    def release_all(self) -> None:
        """Let go of every key and button (focus lost, mouse released): nothing stays stuck down."""
        with self._lock:
            self._held_keys.clear()
            self._held_buttons.clear()

    def sample(self) -> InputSample:
        """Everything held now or pressed since the last sample, and the motion since then."""
        with self._lock:
            sample = InputSample(
                keys=frozenset(self._held_keys | self._tapped_keys),
                buttons=frozenset(self._held_buttons | self._tapped_buttons),
                dx=self._dx, dy=self._dy, first_event_time=self._first_event, sample_time=time.perf_counter())
            self._tapped_keys.clear()
            self._tapped_buttons.clear()
            self._dx = self._dy = 0.0
            self._first_event = None
        return sample


class InputHandler:
    """Turns pygame events into `InputState` updates and `Command`s; owns the mouse grab."""

    def __init__(self, state: InputState, capture_mouse: bool = True) -> None:
        self.state = state
        self.capture_mouse = capture_mouse
        self.paused = False
        self.grabbed = False
        if capture_mouse:
            self.set_grab(True)

    def set_grab(self, grabbed: bool) -> None:
        """Grabbed: cursor hidden and confined, motion relative (SDL relative mouse mode)."""
        pygame.mouse.set_visible(not grabbed)
        pygame.event.set_grab(grabbed)
        self.grabbed = grabbed
        if not grabbed:
            self.state.release_all()

    def handle(self, event: pygame.event.Event) -> list[Command]:
        if event.type == pygame.QUIT:
            return [Command.QUIT]
        if event.type in (pygame.KEYDOWN, pygame.KEYUP):
            return self._key(pygame.key.name(event.key), event.type == pygame.KEYDOWN)
        if event.type in (pygame.MOUSEBUTTONDOWN, pygame.MOUSEBUTTONUP):
            self._button(event.button, event.type == pygame.MOUSEBUTTONDOWN)
        elif event.type == pygame.MOUSEMOTION and self.grabbed:
            self.state.move(*event.rel)
        elif event.type == pygame.WINDOWFOCUSLOST:
            self.state.release_all()
        return []

    def _key(self, name: str, down: bool) -> list[Command]:
        if name == "escape":
            if down and self.grabbed:
                self.set_grab(False)
            return []
        if name in COMMAND_KEYS:
            return [COMMAND_KEYS[name]] if down else []
        if down and name == STEP_KEY and self.paused:
            return [Command.STEP]
        self.state.key(name, down)
        return []

    def _button(self, number: int, down: bool) -> None:
        name = MOUSE_BUTTON_NAMES.get(number)
        if name is None:
            return
        if not self.grabbed:
            if down and self.capture_mouse:
                self.set_grab(True)
            return
        self.state.button(name, down)


def live_actions(state: InputState, keymap: Keymap,
                 sensitivity: float = 1.0) -> Callable[[], tuple[torch.Tensor, float]]:
    """The inference loop's action source during play: one input sample per tick through the keymap.
    `sensitivity` multiplies the keymap's degrees per pixel of mouse motion."""

    def next_action() -> tuple[torch.Tensor, float]:
        sample = state.sample()
        action = keymap.to_action(sample.keys, sample.buttons, sample.dx * sensitivity, sample.dy * sensitivity)
        return action, sample.first_event_time or sample.sample_time

    return next_action


def _label(key: str) -> str:
    return key.upper() if len(key) == 1 else key


def game_controls(keymap: Keymap) -> tuple[list[tuple[str, str]], list[str]]:
    """(key, action) rows for the controls overlay, numbered columns (hotbar.1..9) folded into one row;
    and the bound keys that player controls shadow, so they never reach the world."""
    columns = keymap.action_keys
    rows: list[tuple[str, str]] = []
    numbered: dict[str, list[str]] = {}
    shadowed = []
    for key, indices in keymap.keys.items():
        what = " + ".join(columns[i] for i in indices)
        if key in COMMAND_KEYS or key == "escape":
            shadowed.append(f"'{key}' ({what})")
            continue
        group = re.fullmatch(r"(.+)\.\d+", what)
        if group:
            numbered.setdefault(group[1], []).append(_label(key))
        else:
            rows.append((_label(key), what))
    rows += [(f"{keys[0]}-{keys[-1]}" if len(keys) > 1 else keys[0], f"{name} slot")
             for name, keys in numbered.items()]
    rows += [(f"{button} mouse", " + ".join(columns[i] for i in indices))
             for button, indices in keymap.mouse_buttons.items()]
    rows += [(" + ".join(map(_label, keys)), columns[column]) for keys, column in keymap.combos]
    return rows, shadowed
