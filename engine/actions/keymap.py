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

The action space (`engine.actions.space`: one module per space) says what the names refer to and turns the held
targets and the mouse motion into the world's vector. Discrete spaces take a `combos` section instead: held keys
joined by " + " -> one action name. As in DIAMOND's play mode (src/game/keymap.py, game.py), the longest
combination whose keys are all held wins (ties: the first in the file), nothing held is the first action, and
the action is a one-hot vector. A world names its own action space (`actions.space`, optionally with a variant
after a `/`, e.g. a game whose minimal action set the space knows); `Keymap.load(..., action_space=...)` keeps
the combos whose action that variant has::

    action_space: <a discrete space>
    combos: {space: fire, d: right, "w + d": upright, "d + space": rightfire}
"""

from __future__ import annotations

import math
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from engine.actions.space import SPACES, ActionSpace, action_space, split_space
from engine.actions.vpt import ACTION_KEYS, CAMERA_BIN_DEGREES, CAMERA_MAX_DEGREES, camera_bins
from engine.errors import ConfigError

KEYMAP_DIR = Path(__file__).resolve().parents[2] / "assets" / "keymaps"
COMBO_SEPARATOR = " + "

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

_SECTIONS = ("extends", "action_space", "keys", "mouse_buttons", "camera", "combos")
_MERGED_SECTIONS = ("keys", "mouse_buttons", "camera", "combos")


@dataclass(frozen=True)
class CameraSettings:
    """Mouse pixels -> degrees (-> the space's camera bins, where it has them)."""

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
    action_space: str = "vpt"
    combos: tuple[tuple[tuple[str, ...], int], ...] = ()
    """Discrete spaces: (held keys, column), longest combination first, ties in file order."""

    @property
    def space(self) -> ActionSpace:
        return action_space(split_space(self.action_space)[0])

    @property
    def discrete(self) -> bool:
        return self.space.discrete

    @classmethod
    def load(cls, name_or_path: str | Path, action_space: str | None = None) -> Keymap:
        """A world keymap by name (assets/keymaps/<name>.yaml) or a user's keymap file by path.

        `action_space` is the world's (`actions.space`); a discrete keymap is restricted to its actions."""
        path = _resolve(name_or_path, None)
        keymap = cls.from_dict(_read_merged(path, ()), source=str(path))
        return keymap if action_space is None else keymap.for_action_space(action_space)

    @classmethod
    def from_dict(cls, data: Mapping, source: str = "<dict>") -> Keymap:
        """Validate an already merged keymap mapping (no `extends`)."""
        space = data.get("action_space", "vpt")
        if space not in SPACES:
            raise ConfigError(f"keymap {source}: action_space '{space}' is unknown (expected one of "
                              f"{', '.join(SPACES)})")
        kind = action_space(space)
        columns = kind.targets()
        if kind.discrete:
            for section in ("keys", "mouse_buttons", "camera"):
                if data.get(section):
                    raise ConfigError(f"keymap {source}: action_space {space} takes a 'combos' section "
                                      f"(e.g. 'w + d: upright'), not '{section}'")
            return cls(keys={}, mouse_buttons={}, action_keys=columns, source=source, action_space=space,
                       combos=_combos(data.get("combos"), columns, source))
        if data.get("combos"):
            discrete = ", ".join(name for name in SPACES if action_space(name).discrete)
            raise ConfigError(f"keymap {source}: 'combos' are for discrete action spaces ({discrete}), this "
                              f"keymap's is {space}")
        mouse = kind.mouse_driven
        return cls(
            keys=_bindings(data.get("keys"), "keys", KEY_NAMES, columns, mouse, source, "a pygame key name such as "
                           "'w', 'space', 'left shift'"),
            mouse_buttons=_bindings(data.get("mouse_buttons"), "mouse_buttons", frozenset(MOUSE_BUTTON_NAMES.values()),
                                    columns, mouse, source, f"one of {', '.join(MOUSE_BUTTON_NAMES.values())}"),
            camera=_camera(data.get("camera"), source), action_keys=columns, source=source, action_space=space)

    def for_action_space(self, space: str) -> Keymap:
        """This keymap for a world whose actions are `space` (a space's name, optionally `/<variant>`)."""
        columns = action_space_columns(space)
        if columns == self.action_keys:
            return self
        if not self.discrete or split_space(space)[0] != self.action_space:
            raise ConfigError(f"keymap {self.source} maps to action space {self.action_space}, "
                              f"the world's is {space}")
        combos = tuple((keys, columns.index(self.action_keys[column])) for keys, column in self.combos
                       if self.action_keys[column] in columns)
        return Keymap(keys={}, mouse_buttons={}, camera=self.camera, action_keys=columns, source=self.source,
                      action_space=space, combos=combos)

    def camera_bins(self, mouse_dx: float, mouse_dy: float) -> tuple[int, int]:
        """Mouse motion of one tick (pixels, screen axes) -> VPT's (pitch_bin, yaw_bin), each in 0..80."""
        return camera_bins(self.camera, mouse_dx, mouse_dy)

    def to_action(self, pressed_keys: Iterable[str], mouse_buttons: Iterable[str], mouse_dx: float,
                  mouse_dy: float) -> torch.Tensor:
        """One tick of input -> action vector (A,) float32. Unbound inputs are ignored."""
        if self.discrete:
            values = np.zeros(len(self.action_keys), dtype=np.float32)
            held = set(pressed_keys)
            values[next((column for keys, column in self.combos if held.issuperset(keys)), 0)] = 1.0
            return torch.from_numpy(values)
        held_columns = {column for bindings, names in ((self.keys, pressed_keys), (self.mouse_buttons, mouse_buttons))
                        for name in names for column in bindings.get(name, ())}
        return self.space.encode(sorted(held_columns), mouse_dx, mouse_dy, self.camera)

    def describe(self, action: Iterable[float]) -> str | None:
        """The action in words for the HUD, as the space gives it (None where the world's HUD items say it)."""
        return self.space.describe(list(action))


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
    for section in _MERGED_SECTIONS:
        if data.get(section) is not None and not isinstance(data[section], dict):
            raise ConfigError(f"keymap {path}: '{section}' must be a mapping")
    return data


def _read_merged(path: Path, seen: tuple[Path, ...]) -> dict:
    """The keymap at `path` with its `extends` chain applied (base first, then this file's entries)."""
    if path.resolve() in seen:
        raise ConfigError(f"keymap {path}: 'extends' loops back to itself")
    data = _read_yaml(path)
    base_name = data.pop("extends", None)
    if base_name is None:
        Keymap.from_dict(data, source=str(path))
        return data
    try:
        base_path = _resolve(base_name, path.parent)
    except ConfigError as exc:
        raise ConfigError(f"keymap {path}: extends {base_name!r}, which is not there ({exc})") from None
    base = _read_merged(base_path, (*seen, path.resolve()))
    # report a bad entry against the file that holds it, in the base's action space unless it names its own
    Keymap.from_dict({"action_space": base.get("action_space", "vpt"), **data}, source=str(path))
    merged = {**base, **{k: v for k, v in data.items() if k not in _MERGED_SECTIONS}}
    for section in _MERGED_SECTIONS:
        merged[section] = {**(base.get(section) or {}), **{str(k).lower(): v for k, v in (data.get(section) or {}).items()}}
    return merged


def _bindings(section: Mapping | None, label: str, names: frozenset[str], columns: tuple[str, ...],
              mouse_driven: tuple[str, ...], source: str, expected: str) -> dict[str, tuple[int, ...]]:
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
            if column in mouse_driven:
                raise ConfigError(f"keymap {source}: {label}.'{raw_name}' -> '{column}': the camera columns are "
                                  "driven by the mouse (see the 'camera' section)")
            if not isinstance(column, str) or column not in columns:
                raise ConfigError(f"keymap {source}: {label}.'{raw_name}' -> '{column}' is not an action column "
                                  f"(expected one of {', '.join(c for c in columns if c not in mouse_driven)})")
            indices.append(columns.index(column))
        out[name] = tuple(indices)
    return out


def action_space_columns(space: str) -> tuple[str, ...]:
    """Names of an action space's targets: a space's name, or `<name>/<variant>` (e.g. a game's minimal set)."""
    name, variant = split_space(space)
    if name not in SPACES or (variant and not action_space(name).discrete):
        raise ConfigError(f"action space '{space}' is unknown (expected one of {', '.join(SPACES)}, or a discrete "
                          "space with a variant, e.g. <space>/<Game>)")
    return action_space(name).targets(variant)


def _combos(section: Mapping | None, columns: tuple[str, ...],
            source: str) -> tuple[tuple[tuple[str, ...], int], ...]:
    """Key combinations -> column, ordered longest first (a stable sort keeps the file order of ties)."""
    combos = []
    for raw_name, target in (section or {}).items():
        if target is None:
            continue
        keys = tuple(part.strip() for part in str(raw_name).lower().split(COMBO_SEPARATOR))
        for key in keys:
            if key not in KEY_NAMES:
                raise ConfigError(f"keymap {source}: combos.'{raw_name}': '{key}' is not a pygame key name "
                                  f"(join keys with '{COMBO_SEPARATOR}', e.g. 'w + d')")
        if target not in columns:
            raise ConfigError(f"keymap {source}: combos.'{raw_name}' -> '{target}' is not an action "
                              f"(expected one of {', '.join(columns)})")
        combos.append((keys, columns.index(target)))
    return tuple(sorted(combos, key=lambda combo: -len(combo[0])))


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
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
            raise ConfigError(f"keymap {source}: camera.{key} must be a positive finite number, got {value!r}")
        values[key] = value if key == "invert_y" else float(value)
    return CameraSettings(**{**defaults.__dict__, **values})
