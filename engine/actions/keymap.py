"""Keyboard and mouse state -> world action vector, driven by a keymap YAML (assets/keymaps/<name>.yaml).

Input names are pygame's (`pygame.key.name()`: "w", "space", "left shift", "[1]" for keypad 1; mouse
buttons "left", "middle", "right", "x1", "x2"), but pygame is never imported here: `to_action` takes
plain sets of names and the mouse motion of one tick, so scripted input and tests need no window.

Camera convention (VPT/MineRL): `camera` = [pitch, yaw], i.e. column cameraX = camera[0] is the vertical
(pitch) change driven by the mouse's dy and cameraY = camera[1] the horizontal (yaw) change driven by dx;
openai/Video-Pre-Training's data_loader.py (json_action_to_env_action) sets camera[0] = mouse dy *
CAMERA_SCALER and camera[1] = mouse dx * CAMERA_SCALER, CAMERA_SCALER = 360/2400 degrees per pixel.
Screen coordinates grow rightwards and downwards, so moving the mouse right (dx > 0) turns right (yaw
bin > 40) and moving it down (dy > 0) looks down (pitch bin > 40, Minecraft's pitch grows downwards).

YAML layout::

    extends: minecraft          # optional base keymap (name or path); entries below override it
    action_space: vpt           # column names the values refer to
    keys: {w: forward, "1": hotbar.1, left shift: [sneak], q: null}    # null unbinds a base key
    mouse_buttons: {left: attack, right: use, middle: pickItem}
    camera: {sensitivity: 0.15, max_degrees: 20, bin_degrees: 0.5, invert_y: false}
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from engine.actions.vpt import (
    ACTION_KEYS,
    CAMERA_BIN_DEGREES,
    CAMERA_KEYS,
    CAMERA_MAX_DEGREES,
    PITCH_COLUMN,
    YAW_COLUMN,
    camera_bin,
    camera_value,
)
from engine.errors import ConfigError

KEYMAP_DIR = Path(__file__).resolve().parents[2] / "assets" / "keymaps"
ACTION_SPACES: dict[str, tuple[str, ...]] = {"vpt": ACTION_KEYS}

_NAMED_KEYS = (
    "space", "return", "enter", "escape", "tab", "backspace", "delete", "insert", "home", "end",
    "page up", "page down", "up", "down", "left", "right", "left shift", "right shift", "left ctrl",
    "right ctrl", "left alt", "right alt", "alt gr", "left meta", "right meta", "menu", "caps lock",
    "numlock", "scroll lock", "print screen", "sys req", "break", "clear", "help", "power", "euro", "equals",
)
KEY_NAMES: frozenset[str] = frozenset(
    [*string.ascii_lowercase, *string.digits, *_NAMED_KEYS, *(f"f{i}" for i in range(1, 16)),
     *(f"[{c}]" for c in "0123456789*+-./"), *"!\"#$%&'()*+,-./:;<=>?@[\\]^_`"])
"""Every key name `pygame.key.name()` gives for a key on an ordinary keyboard (pygame-ce, compat names)."""

MOUSE_BUTTON_NAMES: dict[int, str] = {1: "left", 2: "middle", 3: "right", 6: "x1", 7: "x2"}
"""pygame mouse button numbers -> the names keymaps use."""

_SECTIONS = ("extends", "action_space", "keys", "mouse_buttons", "camera")


@dataclass(frozen=True)
class CameraSettings:
    """Mouse pixels -> degrees -> VPT camera bins."""

    sensitivity: float = 360 / 2400
    max_degrees: float = CAMERA_MAX_DEGREES
    bin_degrees: float = CAMERA_BIN_DEGREES
    invert_y: bool = False


@dataclass(frozen=True)
class Keymap:
    """Input names -> action columns. Build with `Keymap.load`; call `to_action` once per tick."""

    keys: dict[str, tuple[int, ...]]
    mouse_buttons: dict[str, tuple[int, ...]]
    camera: CameraSettings = field(default_factory=CameraSettings)
    action_keys: tuple[str, ...] = ACTION_KEYS
    source: str = "<dict>"

    @classmethod
    def load(cls, name_or_path: str | Path) -> Keymap:
        """A world keymap by name (assets/keymaps/<name>.yaml) or a user's keymap file by path."""
        path = _resolve(name_or_path, None)
        return cls.from_dict(_read_merged(path, ()), source=str(path))

    @classmethod
    def from_dict(cls, data: Mapping, source: str = "<dict>") -> Keymap:
        """Validate an already merged keymap mapping (no `extends`)."""
        space = data.get("action_space", "vpt")
        if space not in ACTION_SPACES:
            raise ConfigError(f"keymap {source}: action_space '{space}' is unknown (expected one of "
                              f"{', '.join(ACTION_SPACES)})")
        columns = ACTION_SPACES[space]
        return cls(
            keys=_bindings(data.get("keys"), "keys", KEY_NAMES, columns, source, "a pygame key name such as "
                           "'w', 'space', 'left shift'"),
            mouse_buttons=_bindings(data.get("mouse_buttons"), "mouse_buttons", frozenset(MOUSE_BUTTON_NAMES.values()),
                                    columns, source, f"one of {', '.join(MOUSE_BUTTON_NAMES.values())}"),
            camera=_camera(data.get("camera"), source), action_keys=columns, source=source)

    def camera_bins(self, mouse_dx: float, mouse_dy: float) -> tuple[int, int]:
        """Mouse motion of one tick (pixels, screen axes) -> (pitch_bin, yaw_bin), each in 0..80."""
        cam = self.camera
        dy = -mouse_dy if cam.invert_y else mouse_dy
        return (camera_bin(dy * cam.sensitivity, cam.bin_degrees, cam.max_degrees),
                camera_bin(mouse_dx * cam.sensitivity, cam.bin_degrees, cam.max_degrees))

    def to_action(self, pressed_keys: Iterable[str], mouse_buttons: Iterable[str], mouse_dx: float,
                  mouse_dy: float) -> torch.Tensor:
        """One tick of input -> action vector (A,) float32. Unbound inputs are ignored."""
        values = np.zeros(len(self.action_keys), dtype=np.float32)
        for bindings, names in ((self.keys, pressed_keys), (self.mouse_buttons, mouse_buttons)):
            for name in names:
                columns = bindings.get(name)
                if columns:
                    values[list(columns)] = 1.0
        values[[PITCH_COLUMN, YAW_COLUMN]] = camera_value(self.camera_bins(mouse_dx, mouse_dy))
        return torch.from_numpy(values)


def _resolve(name_or_path: str | Path, relative_to: Path | None) -> Path:
    text = str(name_or_path)
    looks_like_path = isinstance(name_or_path, Path) or text.endswith((".yaml", ".yml")) or "/" in text
    if looks_like_path:
        path = Path(text).expanduser()
        if not path.is_absolute() and relative_to is not None:
            path = relative_to / path
        if not path.is_file():
            raise ConfigError(f"keymap {path} does not exist")
        return path
    path = KEYMAP_DIR / f"{text}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in KEYMAP_DIR.glob("*.yaml"))) or "none"
        raise ConfigError(f"keymap '{text}' not found in {KEYMAP_DIR} (available: {known}); "
                          "pass a .yaml path for your own")
    return path


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"keymap {where}: bad YAML ({exc.problem})") from None
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"keymap {path}: not readable YAML ({' '.join(str(exc).split())})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"keymap {path}: expected a mapping with sections {', '.join(_SECTIONS)}")
    unknown = [str(k) for k in data if k not in _SECTIONS]
    if unknown:
        raise ConfigError(f"keymap {path}: unknown section '{unknown[0]}' (expected {', '.join(_SECTIONS)})")
    for section in ("keys", "mouse_buttons", "camera"):
        if data.get(section) is not None and not isinstance(data[section], dict):
            raise ConfigError(f"keymap {path}: '{section}' must be a mapping")
    return data


def _read_merged(path: Path, seen: tuple[Path, ...]) -> dict:
    """The keymap at `path` with its `extends` chain applied (base first, then this file's entries)."""
    if path.resolve() in seen:
        raise ConfigError(f"keymap {path}: 'extends' loops back to itself")
    data = _read_yaml(path)
    base_name = data.pop("extends", None)
    Keymap.from_dict(data, source=str(path))  # report a bad entry against the file that holds it
    if base_name is None:
        return data
    base = _read_merged(_resolve(base_name, path.parent), (*seen, path.resolve()))
    merged = {**base, **{k: v for k, v in data.items() if k not in ("keys", "mouse_buttons", "camera")}}
    for section in ("keys", "mouse_buttons", "camera"):
        merged[section] = {**(base.get(section) or {}), **{str(k).lower(): v for k, v in (data.get(section) or {}).items()}}
    return merged


def _bindings(section: Mapping | None, label: str, names: frozenset[str], columns: tuple[str, ...],
              source: str, expected: str) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    for raw_name, target in (section or {}).items():
        if isinstance(raw_name, bool):
            raise ConfigError(f"keymap {source}: {label}.{raw_name}: YAML read this key as a boolean; quote it")
        name = str(raw_name).lower()
        if name not in names:
            raise ConfigError(f"keymap {source}: {label}.'{raw_name}' is not an input name (expected {expected})")
        if target is None:
            continue
        targets = target if isinstance(target, list) else [target]
        indices = []
        for column in targets:
            if column in CAMERA_KEYS:
                raise ConfigError(f"keymap {source}: {label}.'{raw_name}' -> '{column}': the camera columns are "
                                  "driven by the mouse (see the 'camera' section)")
            if not isinstance(column, str) or column not in columns:
                raise ConfigError(f"keymap {source}: {label}.'{raw_name}' -> '{column}' is not an action column "
                                  f"(expected one of {', '.join(c for c in columns if c not in CAMERA_KEYS)})")
            indices.append(columns.index(column))
        out[name] = tuple(indices)
    return out


def _camera(section: Mapping | None, source: str) -> CameraSettings:
    section = dict(section or {})
    defaults = CameraSettings()
    values = {}
    for key, value in section.items():
        if key not in CameraSettings.__dataclass_fields__:
            raise ConfigError(f"keymap {source}: camera.{key} is unknown (expected sensitivity, max_degrees, "
                              "bin_degrees, invert_y)")
        if key == "invert_y":
            if not isinstance(value, bool):
                raise ConfigError(f"keymap {source}: camera.invert_y must be true or false, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f"keymap {source}: camera.{key} must be a positive number, got {value!r}")
        values[key] = value if key == "invert_y" else float(value)
    return CameraSettings(**{**defaults.__dict__, **values})
