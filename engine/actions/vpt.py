"""The 25-dim VPT/MineRL action vector Oasis is conditioned on, built exactly as open-oasis builds it.

Columns follow `ACTION_KEYS`. Binary keys are copied (any number in [0, 1] is accepted, as the
reference asserts). The camera is a pair of bins: in MineRL's `camera` action, camera[0] is the pitch
change and camera[1] the yaw change, each quantised to 0.5-degree bins over +-20 degrees with bin 40 =
no motion; column `cameraX` holds camera[0] and `cameraY` camera[1], as (bin - 40) / 40 computed in
float64 and stored as float32.

Action streams follow generate.py's `load_actions`: frame 0 (the prompt) gets an all-zero action and
frame j >= 1 gets raw row offset + j - 1. Recordings written by this project (`.npz`) already hold one
action per frame, so they are used as they are: frame j gets row offset + j.
"""

from __future__ import annotations

import json
import math
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.actions.space import check_action_values
from engine.errors import ConfigError

ACTION_KEYS: tuple[str, ...] = (
    "inventory", "ESC",
    "hotbar.1", "hotbar.2", "hotbar.3", "hotbar.4", "hotbar.5", "hotbar.6", "hotbar.7", "hotbar.8", "hotbar.9",
    "forward", "back", "left", "right",
    "cameraX", "cameraY",
    "jump", "sneak", "sprint", "swapHands", "attack", "use", "pickItem", "drop",
)
CAMERA_KEYS: tuple[str, str] = ("cameraX", "cameraY")
BINARY_KEYS: tuple[str, ...] = tuple(k for k in ACTION_KEYS if k not in CAMERA_KEYS)
PITCH_COLUMN = ACTION_KEYS.index("cameraX")
YAW_COLUMN = ACTION_KEYS.index("cameraY")

CAMERA_MAX_DEGREES = 20.0
CAMERA_BIN_DEGREES = 0.5
CAMERA_CENTER_BIN = int(CAMERA_MAX_DEGREES / CAMERA_BIN_DEGREES)
CAMERA_TOLERANCE = 1e-3  # the reference asserts camera values within [-1 - 1e-3, 1 + 1e-3]


def camera_value(bins: float | np.ndarray) -> np.ndarray:
    """Camera bin(s) -> normalised column value(s): (bin - 40) / 40 in float64, then float32."""
    return ((np.asarray(bins, dtype=np.float64) - CAMERA_CENTER_BIN) / CAMERA_CENTER_BIN).astype(np.float32)


def camera_bin(degrees: float, bin_degrees: float = CAMERA_BIN_DEGREES,
               max_degrees: float = CAMERA_MAX_DEGREES) -> int:
    """Degrees of camera motion in one tick -> VPT bin in 0..80.

    The angle is clamped to +-max_degrees, divided into bins of `bin_degrees` (halves rounded away
    from zero, so +x and -x land on mirrored bins) and centred on bin 40.
    """
    clamped = min(max(float(degrees), -max_degrees), max_degrees)
    steps = math.floor(abs(clamped) / bin_degrees + 0.5)
    return int(min(max(CAMERA_CENTER_BIN + math.copysign(steps, clamped), 0), 2 * CAMERA_CENTER_BIN))


def camera_bins(camera: Any, mouse_dx: float, mouse_dy: float) -> tuple[int, int]:
    """Mouse motion of one tick (pixels, screen axes) -> (pitch_bin, yaw_bin), each in 0..80, with a keymap's
    camera settings (`sensitivity` degrees per pixel, `bin_degrees`, `max_degrees`, `invert_y`)."""
    dy = -mouse_dy if camera.invert_y else mouse_dy
    return (camera_bin(dy * camera.sensitivity, camera.bin_degrees, camera.max_degrees),
            camera_bin(mouse_dx * camera.sensitivity, camera.bin_degrees, camera.max_degrees))


class VptSpace:
    """Minecraft's VPT/MineRL vector: keys and buttons hold binary columns, the mouse turns the camera bins."""

    name = "vpt"
    discrete = False
    mouse_driven = CAMERA_KEYS

    def targets(self, variant: str = "") -> tuple[str, ...]:
        return ACTION_KEYS

    def encode(self, held: Sequence[int], mouse_dx: float, mouse_dy: float, camera: Any) -> torch.Tensor:
        values = np.zeros(len(ACTION_KEYS), dtype=np.float32)
        values[list(held)] = 1.0
        values[[PITCH_COLUMN, YAW_COLUMN]] = camera_value(camera_bins(camera, mouse_dx, mouse_dy))
        return torch.from_numpy(values)

    def describe(self, action: Sequence[float]) -> str | None:
        """The pressed columns and the camera turn in degrees."""
        if len(action) != len(ACTION_KEYS):
            return None
        values = [float(v) for v in action]
        pressed = [name for i, name in enumerate(ACTION_KEYS) if i not in (PITCH_COLUMN, YAW_COLUMN) and values[i]]
        degrees = CAMERA_CENTER_BIN * CAMERA_BIN_DEGREES
        pitch, yaw = values[PITCH_COLUMN] * degrees, values[YAW_COLUMN] * degrees
        if pitch or yaw:
            pressed.append(f"camera pitch {pitch:+.1f}° yaw {yaw:+.1f}°")
        return " ".join(pressed) or "none"


SPACE = VptSpace()


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(float(value))


def _action_row(action: Mapping, where: str) -> list[float]:
    """One action dict -> 25 float64 values in ACTION_KEYS order (camera still as raw bins)."""
    if not isinstance(action, Mapping):
        raise ConfigError(f"{where}: expected a JSON object of VPT actions, got {type(action).__name__}")
    camera = action.get("camera")
    if camera is None:
        raise ConfigError(f"{where}: missing key 'camera' (expected [pitch_bin, yaw_bin], integers 0..80)")
    if isinstance(camera, np.ndarray):
        camera = camera.tolist()
    if not isinstance(camera, (list, tuple)) or len(camera) != 2 or not all(_is_number(c) for c in camera):
        raise ConfigError(f"{where}: 'camera' must be [pitch_bin, yaw_bin] (two numbers in 0..80), got {camera!r}")
    limit = 1 + CAMERA_TOLERANCE
    for name, raw in zip(CAMERA_KEYS, camera, strict=True):
        if not -limit <= float(camera_value(raw)) <= limit:
            raise ConfigError(f"{where}: 'camera' {name} bin {raw!r} is out of range (expected 0..80)")
    row = []
    for key in ACTION_KEYS:
        if key in CAMERA_KEYS:
            row.append(float(camera[CAMERA_KEYS.index(key)]))
            continue
        if key not in action:
            raise ConfigError(f"{where}: missing key '{key}' (expected all of {', '.join(BINARY_KEYS)}, camera)")
        value = action[key]
        if not _is_number(value) or not 0 <= float(value) <= 1:
            raise ConfigError(f"{where}: '{key}' must be 0 or 1, got {value!r}")
        row.append(float(value))
    return row


def _one_hot(rows: list[list[float]]) -> torch.Tensor:
    values = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(ACTION_KEYS))
    out = values.astype(np.float32)
    out[:, [PITCH_COLUMN, YAW_COLUMN]] = camera_value(values[:, [PITCH_COLUMN, YAW_COLUMN]])
    return torch.from_numpy(out)


def one_hot_from_dicts(dicts: Sequence[Mapping]) -> torch.Tensor:
    """VPT action dicts (24 keys, `camera` = [pitch_bin, yaw_bin]) -> (N, 25) float32, as `one_hot_actions`."""
    return _one_hot([_action_row(action, f"action {i}") for i, action in enumerate(dicts)])


def read_actions_jsonl(path: str | Path) -> list[dict]:
    """One VPT action dict per line; blank lines are skipped. Every dict is checked here, so errors name the line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"action file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"action file {path} is not readable UTF-8 text ({exc})") from None
    actions = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            action = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        _action_row(action, where)
        actions.append(action)
    return actions


def _check_rows(rows: torch.Tensor, path: Path, what: str, action_dim: int | None) -> torch.Tensor:
    if rows.ndim != 2 or (action_dim is not None and rows.shape[1] != action_dim):
        expected = f"(N, {action_dim})" if action_dim is not None else "(N, A)"
        raise ConfigError(f"{path}: {what} has shape {tuple(rows.shape)}, expected {expected}")
    if rows.dtype.is_complex:
        raise ConfigError(f"{path}: {what} has dtype {rows.dtype}, expected float")
    return check_action_values(rows.to(torch.float32), f"{path}: {what}")


def _read_safetensors(path: Path, action_dim: int | None) -> torch.Tensor:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ConfigError(f"{path}: not a readable safetensors file ({exc})") from None
    if "one_hot" not in tensors:
        raise ConfigError(f"{path}: no tensor 'one_hot' (found {', '.join(sorted(tensors)) or 'none'})")
    return _check_rows(tensors["one_hot"], path, "'one_hot'", action_dim)


def _read_pt(path: Path, action_dim: int | None) -> torch.Tensor:
    try:
        rows = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"{path}: not loadable with torch.load(weights_only=True) ({type(exc).__name__}); "
                          "pickles holding numpy arrays (open-oasis *.actions.pt) are not loaded: "
                          "convert them to .jsonl") from None
    if isinstance(rows, list):
        return _one_hot([_action_row(action, f"{path} row {i}") for i, action in enumerate(rows)])
    if not isinstance(rows, torch.Tensor):
        raise ConfigError(f"{path}: holds a {type(rows).__name__}, expected an (N, 25) one-hot tensor "
                          "or a list of VPT action dicts")
    return _check_rows(rows, path, "the tensor", action_dim)


def _read_npz(path: Path, action_dim: int | None) -> torch.Tensor:
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ConfigError(f"{path}: is a single .npy array, expected an .npz recording with 'actions'")
        with data:
            if "actions" not in data.files:
                raise ConfigError(f"{path}: no array 'actions' (found {', '.join(data.files) or 'none'})")
            rows = data["actions"]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise ConfigError(f"{path}: not a readable .npz recording ({' '.join(str(exc).split())})") from None
    if rows.dtype.kind not in "biuf":
        raise ConfigError(f"{path}: 'actions' has dtype {rows.dtype}, expected numbers (float32 rows)")
    return _check_rows(torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32)), path, "'actions'", action_dim)


def read_action_rows(path: str | Path, action_dim: int | None = len(ACTION_KEYS)) -> tuple[torch.Tensor, bool]:
    """Raw action rows (N, A) float32 of a `.jsonl`, one-hot `.safetensors`/`.pt` or recording `.npz` file.

    The flag says whether the rows are already one per frame (recordings) rather than actions taken
    after each frame (VPT files).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"action file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return one_hot_from_dicts(read_actions_jsonl(path)), False
    if suffix == ".safetensors":
        return _read_safetensors(path, action_dim), False
    if suffix == ".pt":
        return _read_pt(path, action_dim), False
    if suffix == ".npz":
        return _read_npz(path, action_dim), True
    raise ConfigError(f"action file {path}: unknown type '{suffix}' (expected .jsonl, .safetensors, .pt or .npz)")


def load_action_stream(path: str | Path, total_frames: int, offset: int = 0,
                       action_dim: int | None = len(ACTION_KEYS)) -> torch.Tensor:
    """Per-frame actions (total_frames, A) float32: actions[j] conditions frame j (see the module docstring)."""
    if total_frames < 1 or offset < 0:
        raise ConfigError(f"action stream needs total_frames >= 1 and offset >= 0, got {total_frames} and {offset}")
    rows, per_frame = read_action_rows(path, action_dim)
    if per_frame:
        needed = offset + total_frames
        stream = rows[offset:needed]
    else:
        needed = offset + total_frames - 1
        stream = torch.cat([rows.new_zeros((1, rows.shape[1])), rows[offset:needed]])
    if len(rows) < needed:
        raise ConfigError(f"action file {path} has {len(rows)} rows; {total_frames} frames from offset {offset} "
                          f"need {needed}")
    return stream.contiguous()
