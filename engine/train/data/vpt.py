"""VPT-format Minecraft episodes: `<name>.mp4` + `<name>.jsonl`, as in OpenAI's VPT contractor data
(openai/Video-Pre-Training, data_loader.py), which WorldMAR and WorldMem train on.

Each jsonl line is one tick: `mouse` (`dx`, `dy` in pixels, `buttons`, `newButtons`), `keyboard.keys`
(`key.keyboard.*` names), `hotbar` (0-8), `isGuiOpen`, and the player's pose `xpos, ypos, zpos, pitch,
yaw`. Tick t's action is taken after frame t, so it conditions frame t+1.

Actions become the 25-dim vector of `engine.actions.vpt.ACTION_KEYS`, with VPT's own rules: unknown keys
are ignored, mouse buttons 0/1/2 are attack/use/pickItem, a change of `hotbar` presses that hotbar key,
and an attack button already down on the first tick ("stuck attack") is ignored until it is pressed again.
The camera columns have two encodings:

* default (Oasis, the vector the player's keymap produces): mouse pixels * 360/2400 -> degrees ->
  0.5-degree bins over +-20 degrees -> (bin - 40) / 40;
* `reference_compat` (WorldMAR's loader, fixture quirk D1): `trunc(d * 0.025) * 0.025`, i.e. multiples
  of 0.025 and zero below 40 pixels.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import torch

from engine.actions.vpt import ACTION_KEYS, PITCH_COLUMN, YAW_COLUMN, camera_bin, camera_value
from engine.errors import ConfigError
from engine.train.data.episode import Episode

KEYBOARD_COLUMNS: dict[str, str] = {
    "key.keyboard.escape": "ESC", "key.keyboard.s": "back", "key.keyboard.q": "drop", "key.keyboard.w": "forward",
    **{f"key.keyboard.{n}": f"hotbar.{n}" for n in range(1, 10)},
    "key.keyboard.e": "inventory", "key.keyboard.space": "jump", "key.keyboard.a": "left", "key.keyboard.d": "right",
    "key.keyboard.left.shift": "sneak", "key.keyboard.left.control": "sprint", "key.keyboard.f": "swapHands",
}
BUTTON_COLUMNS: dict[int, str] = {0: "attack", 1: "use", 2: "pickItem"}
POSE_FIELDS = ("xpos", "ypos", "zpos", "pitch", "yaw")
DEGREES_PER_PIXEL = 360 / 2400
WORLDMAR_CAMERA_SCALER = 360 / (2400 * 6)
ATTACK_BUTTON = 0
VIDEO_SEEK_GAP = 40  # frames: decode through gaps up to this long instead of seeking again

_COLUMN = {key: i for i, key in enumerate(ACTION_KEYS)}


def read_vpt_jsonl(path: str | Path) -> list[dict]:
    """The ticks of a VPT metadata file, checked for the fields the action vector needs."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ConfigError(f"VPT metadata {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"VPT metadata {path} is not readable UTF-8 text ({exc})") from None
    ticks = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            tick = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        _check_tick(tick, f"{path}:{lineno}")
        ticks.append(tick)
    if not ticks:
        raise ConfigError(f"VPT metadata {path} has no ticks")
    return ticks


def _check_tick(tick: object, where: str) -> None:
    if not isinstance(tick, Mapping):
        raise ConfigError(f"{where}: expected a JSON object (one VPT tick), got {type(tick).__name__}")
    mouse, keyboard = tick.get("mouse"), tick.get("keyboard")
    if not isinstance(mouse, Mapping) or not isinstance(keyboard, Mapping):
        raise ConfigError(f"{where}: a VPT tick needs 'mouse' and 'keyboard' objects (is this an open-oasis "
                          "action file? those are read by engine.actions.vpt)")
    for key in ("dx", "dy"):
        if not isinstance(mouse.get(key), (int, float)) or not math.isfinite(mouse[key]):
            raise ConfigError(f"{where}: 'mouse.{key}' must be a number of pixels, got {mouse.get(key)!r}")
    for key in ("buttons", "newButtons"):
        if not isinstance(mouse.get(key, []), list):
            raise ConfigError(f"{where}: 'mouse.{key}' must be a list of button numbers")
    if not isinstance(keyboard.get("keys"), list):
        raise ConfigError(f"{where}: 'keyboard.keys' must be a list of key names")
    for key in POSE_FIELDS:
        if key in tick and not isinstance(tick[key], (int, float)):
            raise ConfigError(f"{where}: '{key}' must be a number, got {tick[key]!r}")


def _camera_values(dy: np.ndarray, dx: np.ndarray, reference_compat: bool) -> tuple[np.ndarray, np.ndarray]:
    if reference_compat:
        # numpy writes d * scaler into an integer array (truncation; + 0.0 turns -0 into the integer's 0),
        # then scales it again.
        return ((np.trunc(dy * WORLDMAR_CAMERA_SCALER) + 0.0) * WORLDMAR_CAMERA_SCALER,
                (np.trunc(dx * WORLDMAR_CAMERA_SCALER) + 0.0) * WORLDMAR_CAMERA_SCALER)
    pitch = [camera_bin(d * DEGREES_PER_PIXEL) for d in dy]
    yaw = [camera_bin(d * DEGREES_PER_PIXEL) for d in dx]
    return camera_value(pitch), camera_value(yaw)


def vpt_action_matrix(ticks: Sequence[Mapping], reference_compat: bool = False) -> torch.Tensor:
    """Per-tick actions (n, 25) float32: row t is the action taken at tick t (see the module docstring)."""
    n = len(ticks)
    out = np.zeros((n, len(ACTION_KEYS)), dtype=np.float64)
    attack_stuck = False
    last_hotbar = 0
    for t, tick in enumerate(ticks):
        mouse = tick["mouse"]
        new_buttons = mouse.get("newButtons", [])
        if t == 0:
            attack_stuck = new_buttons == [ATTACK_BUTTON]
        elif attack_stuck and ATTACK_BUTTON in new_buttons:
            attack_stuck = False
        row = out[t]
        for key in tick["keyboard"]["keys"]:
            if key in KEYBOARD_COLUMNS:
                row[_COLUMN[KEYBOARD_COLUMNS[key]]] = 1
        for button, column in BUTTON_COLUMNS.items():
            if button in mouse.get("buttons", []) and not (attack_stuck and button == ATTACK_BUTTON):
                row[_COLUMN[column]] = 1
        hotbar = tick.get("hotbar", last_hotbar)
        if hotbar != last_hotbar and f"hotbar.{hotbar + 1}" in _COLUMN:
            row[_COLUMN[f"hotbar.{hotbar + 1}"]] = 1
        last_hotbar = hotbar
    dy = np.array([tick["mouse"]["dy"] for tick in ticks], dtype=np.float64)
    dx = np.array([tick["mouse"]["dx"] for tick in ticks], dtype=np.float64)
    pitch, yaw = _camera_values(dy, dx, reference_compat)
    out[:, PITCH_COLUMN], out[:, YAW_COLUMN] = pitch, yaw
    return torch.from_numpy(out.astype(np.float32))


def vpt_poses(ticks: Sequence[Mapping]) -> torch.Tensor:
    """(n, 5) float32 poses; NaN where a tick lacks a pose field."""
    rows = [[float(tick.get(key, math.nan)) for key in POSE_FIELDS] for tick in ticks]
    return torch.tensor(rows, dtype=torch.float32).reshape(len(ticks), len(POSE_FIELDS))


class VideoFrames:
    """Frames of an mp4 decoded by imageio-ffmpeg's ffmpeg; random reads seek (frame-accurately) per run."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"video {self.path} does not exist")
        try:
            reader = imageio_ffmpeg.read_frames(str(self.path))
            meta = next(reader)
            reader.close()
            self.num_frames = int(imageio_ffmpeg.count_frames_and_secs(str(self.path))[0])
        except (OSError, RuntimeError, StopIteration) as exc:
            raise ConfigError(f"video {self.path} is not readable by ffmpeg ({str(exc).splitlines()[0]})") from None
        width, height = meta["size"]
        self.size = (int(height), int(width))
        self.fps = float(meta["fps"])

    def _decode(self, start: int, count: int) -> Iterator[np.ndarray]:
        # Seeking half a frame early keeps frame `start` whatever the container's timestamp rounding.
        seek = ["-ss", f"{(start - 0.5) / self.fps:.6f}"] if start > 0 else []
        reader = imageio_ffmpeg.read_frames(str(self.path), input_params=seek,
                                            output_params=["-map", "0:v:0", "-fps_mode", "passthrough"])
        height, width = self.size
        produced = 0
        try:
            next(reader)
            while produced < count:
                raw = next(reader, None)
                if raw is None:
                    break
                yield np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3)
                produced += 1
        finally:
            reader.close()
        if produced < count:
            raise ConfigError(f"video {self.path}: frames {start}..{start + count - 1} requested, "
                              f"it ends after {start + produced}")

    def iter_chunks(self, start: int, stop: int, chunk: int) -> Iterator[np.ndarray]:
        batch: list[np.ndarray] = []
        for frame in self._decode(start, stop - start):
            batch.append(frame)
            if len(batch) == chunk:
                yield np.stack(batch)
                batch = []
        if batch:
            yield np.stack(batch)

    def read(self, indices: Sequence[int]) -> np.ndarray:
        wanted = sorted(set(int(i) for i in indices))
        if wanted and (wanted[0] < 0 or wanted[-1] >= self.num_frames):
            raise ConfigError(f"video {self.path}: frame index out of range 0..{self.num_frames - 1}")
        found: dict[int, np.ndarray] = {}
        run_start = 0
        for k in range(1, len(wanted) + 1):
            if k == len(wanted) or wanted[k] - wanted[k - 1] > VIDEO_SEEK_GAP:
                first, last = wanted[run_start], wanted[k - 1]
                keep = set(wanted[run_start:k])
                for offset, frame in enumerate(self._decode(first, last - first + 1)):
                    if first + offset in keep:
                        found[first + offset] = frame.copy()
                run_start = k
        return np.stack([found[int(i)] for i in indices]) if len(indices) else np.zeros((0, *self.size, 3), np.uint8)


def load_vpt_episode(jsonl: str | Path, video: str | Path | None = None, *,
                     reference_compat: bool = False) -> Episode:
    """One VPT episode. `video` defaults to the `.mp4` beside the jsonl when it exists.

    With a video the episode has min(ticks, video frames) frames. Frame t is conditioned by tick t-1's
    action (frame 0 by the zero action), as open-oasis load_actions and WorldMAR's dataset do.
    """
    jsonl = Path(jsonl)
    ticks = read_vpt_jsonl(jsonl)
    if video is None and jsonl.with_suffix(".mp4").is_file():
        video = jsonl.with_suffix(".mp4")
    frames = VideoFrames(video) if video is not None else None
    count = len(ticks) if frames is None else min(len(ticks), frames.num_frames)
    per_tick = vpt_action_matrix(ticks[:count], reference_compat)
    actions = torch.cat([per_tick.new_zeros((1, per_tick.shape[1])), per_tick[:-1]])
    gui = torch.tensor([bool(tick.get("isGuiOpen", False)) for tick in ticks[:count]], dtype=torch.bool)
    return Episode(name=jsonl.stem, actions=actions, poses=vpt_poses(ticks[:count]), frames=frames, gui_open=gui,
                   fps=frames.fps if frames is not None else 20.0, source=str(jsonl),
                   info={"format": "vpt", "reference_compat": reference_compat})
