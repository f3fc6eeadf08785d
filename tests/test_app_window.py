"""The player's real window under Xvfb with moderngl on Mesa: input -> action tensors, what reaches the
screen (letterbox included), controls, filters, and the error without a display."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from app.player import open_player
from app.render import Renderer, letterbox
from engine.actions.vpt import ACTION_KEYS, PITCH_COLUMN, YAW_COLUMN
from tests.conftest import PROJECT_ROOT
from tests.test_app_support import (
    TickLog,
    find_window,
    player_args,
    pump,
    xdotool,
)

FORWARD, JUMP, SNEAK, ATTACK, INVENTORY = (ACTION_KEYS.index(k) for k in ("forward", "jump", "sneak", "attack",
                                                                           "inventory"))
DEGREES_PER_UNIT = 20.0  # camera column value 1.0 = 40 bins of 0.5 degrees


@pytest.fixture
def player(display, world, tmp_path):
    args = player_args(world, tmp_path / "recordings", "--window-size", "300x300", "--filter", "nearest")
    with open_player(args) as player:
        player.log = TickLog()
        player.source.listeners.append(player.log)
        player.window_id = find_window()
        xdotool("windowfocus", player.window_id)
        xdotool("mousemove", "--window", player.window_id, "150", "150")
        pump(player, lambda: len(player.log.ticks) >= 2, what="first ticks")
        yield player


def wait_for_action(player, check, what: str) -> torch.Tensor:
    """Ticks sampled after now until one whose action passes `check`; returns that action."""
    start = len(player.log.ticks)
    found: list[torch.Tensor] = []

    def seen() -> bool:
        found.extend(t.action for t in player.log.ticks[start:] if check(t.action))
        return bool(found)

    pump(player, seen, what=what)
    return found[0]


def camera_degrees(actions) -> tuple[float, float]:
    actions = list(actions)
    pitch = sum(float(a[PITCH_COLUMN]) for a in actions) * DEGREES_PER_UNIT
    yaw = sum(float(a[YAW_COLUMN]) for a in actions) * DEGREES_PER_UNIT
    return pitch, yaw


def test_keys_and_buttons_set_their_vpt_columns(player):
    xdotool("keydown", "w")
    action = wait_for_action(player, lambda a: a[FORWARD] == 1, "w -> forward")
    assert action.sum() == 1, "only the forward column is set"
    xdotool("keydown", "space", "keydown", "shift")
    action = wait_for_action(player, lambda a: a[JUMP] == 1 and a[SNEAK] == 1, "space + shift")
    assert action[FORWARD] == 1, "w is still held"
    xdotool("keyup", "w", "keyup", "space", "keyup", "shift")
    wait_for_action(player, lambda a: a.sum() == 0, "keys released")
    xdotool("mousedown", "1")
    wait_for_action(player, lambda a: a[ATTACK] == 1, "left button -> attack")
    xdotool("mouseup", "1")
    wait_for_action(player, lambda a: a[ATTACK] == 0, "left button released")


def test_mouse_motion_turns_the_camera(player):
    sensitivity = 0.15  # degrees per pixel, assets/keymaps/minecraft.yaml
    def turned(start: int, pitch: float, yaw: float) -> bool:
        seen = camera_degrees(t.action for t in player.log.ticks[start:])
        return abs(seen[0] - pitch) <= 0.5 and abs(seen[1] - yaw) <= 0.5

    for dx, dy in ((40, 0), (0, -20), (-12, 30)):
        start = len(player.log.ticks)
        xdotool("mousemove_relative", "--", str(dx), str(dy))
        pump(player, lambda s=start, x=dx, y=dy: turned(s, y * sensitivity, x * sensitivity),
             what=f"camera turn for mouse motion {dx}, {dy}")
    assert player.handler.grabbed


def test_escape_releases_the_mouse_and_a_click_takes_it_back(player):
    xdotool("key", "Escape")
    pump(player, lambda: not player.handler.grabbed, what="mouse released")
    assert "click the window" in player.hud_info().status
    start = len(player.log.ticks)
    xdotool("mousemove_relative", "--", "30", "0")
    pump(player, lambda: len(player.log.ticks) > start + 3, what="ticks")
    assert camera_degrees(t.action for t in player.log.ticks[start:]) == (0.0, 0.0), "free mouse moves no camera"
    xdotool("mousemove", "--window", player.window_id, "150", "150", "click", "1")
    pump(player, lambda: player.handler.grabbed, what="mouse grabbed again")
    pump(player, lambda: len(player.log.ticks) > start + 6, what="ticks")
    assert all(t.action[ATTACK] == 0 for t in player.log.ticks[start:]), "the grabbing click is not an attack"


def test_pause_step_and_reset(player):
    xdotool("key", "period")
    pump(player, lambda: player.source.paused, what="pause")
    pump(player, lambda: not player.source.busy and player.source.latest() is player.shown, what="last tick shown")
    paused_at = len(player.log.ticks)
    for _ in range(20):
        player.iterate()
    assert len(player.log.ticks) == paused_at, "no ticks while paused"
    xdotool("key", "e")
    pump(player, lambda: len(player.log.ticks) == paused_at + 1, what="single step")
    for _ in range(20):
        player.iterate()
    assert len(player.log.ticks) == paused_at + 1
    assert player.log.ticks[-1].action[INVENTORY] == 0, "e steps while paused instead of opening the inventory"
    xdotool("key", "Return")
    pump(player, lambda: player.log.resets == 1 and player.shown.is_prompt, what="reset to the prompt")
    assert player.shown.frame_index == player.source.session.prompt_frames().shape[0]
    xdotool("key", "period")
    pump(player, lambda: not player.source.paused and len(player.log.ticks) > paused_at + 3, what="resume")


def expected_screen(frame: np.ndarray, window: tuple[int, int]) -> np.ndarray:
    """Black window with the frame scaled by an integer factor (nearest) into its letterbox."""
    x, y, w, h = letterbox(frame.shape[:2], window)
    scale = w // frame.shape[1]
    assert (w, h) == (frame.shape[1] * scale, frame.shape[0] * scale)
    screen = np.zeros((window[1], window[0], 3), np.uint8)
    screen[y:y + h, x:x + w] = frame.repeat(scale, 0).repeat(scale, 1)
    return screen


def shown_screen(player) -> tuple[np.ndarray, np.ndarray]:
    """(what the window shows, the model frame it shows), read from the default framebuffer."""
    player.draw()
    return player.renderer.read_screen(player.window.size), player.shown.frame


def test_screen_is_the_model_frame_letterboxed(player, tmp_path):
    xdotool("key", "h", "key", "F1")
    pump(player, lambda: not player.show_hud and not player.show_controls, what="HUD and controls hidden")
    screen, frame = shown_screen(player)
    assert player.frame_rect == (0, 50, 300, 200)
    np.testing.assert_array_equal(screen, expected_screen(frame, (300, 300)))

    xdotool("windowsize", player.window_id, "400", "200")
    pump(player, lambda: player.window.size == (400, 200), what="window resized")
    screen, frame = shown_screen(player)
    assert player.frame_rect == (50, 0, 300, 200), "pillarbox: bars left and right"
    np.testing.assert_array_equal(screen, expected_screen(frame, (400, 200)))

    xdotool("key", "F12")
    shots = player.screenshot_dir
    pump(player, lambda: shots.is_dir() and any(shots.glob("screenshot-*.png")), what="F12 screenshot")
    saved = np.asarray(Image.open(next(shots.glob("screenshot-*.png"))).convert("RGB"))
    np.testing.assert_array_equal(saved, expected_screen(player.shown.frame, (400, 200)))


def bilinear_reference(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Texture sampling at pixel centres with linear filtering and clamped edges, in float64."""
    width, height = size
    src = frame.astype(np.float64)

    def axis(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        low = np.floor(pos).astype(int)
        return low, np.minimum(low + 1, n_in - 1), pos - low

    y0, y1, fy = axis(height, frame.shape[0])
    x0, x1, fx = axis(width, frame.shape[1])
    top = src[y0][:, x0] * (1 - fx)[None, :, None] + src[y0][:, x1] * fx[None, :, None]
    bottom = src[y1][:, x0] * (1 - fx)[None, :, None] + src[y1][:, x1] * fx[None, :, None]
    return top * (1 - fy)[:, None, None] + bottom * fy[:, None, None]


@pytest.mark.parametrize("filter_name", ["bilinear", "sharp"])
def test_smooth_filters_on_real_gl(player, filter_name):
    """Per-texel noise (the world's frames are flat patches, where every filter looks alike)."""
    renderer = Renderer(player.window.ctx, filter_name)
    frame = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    renderer.upload(frame)
    size = player.window.size
    x, y, w, h = renderer.draw_frame(size)
    screen = renderer.read_screen(size).astype(np.float64)
    assert screen[:y].max() == 0 and screen[y + h:].max() == 0, "letterbox bars are black"
    image = screen[y:y + h, x:x + w]
    if filter_name == "bilinear":
        assert np.abs(image - bilinear_reference(frame, (w, h))).max() <= 3
    else:
        nearest = frame.repeat(h // frame.shape[0], 0).repeat(w // frame.shape[1], 1).astype(np.float64)
        differs = np.abs(image - nearest).max(axis=2) > 3
        assert differs.mean() < 0.05, "sharp keeps texel interiors flat; only the seams are blended"
        assert np.abs(image - bilinear_reference(frame, (w, h))).mean() > 1, "and is not plain bilinear"


def test_fullscreen_toggle_keeps_drawing(player):
    xdotool("key", "F11")
    pump(player, lambda: player.window.size == (1280, 1024), what="fullscreen")
    xdotool("key", "F11")
    pump(player, lambda: player.window.size == (300, 300), what="windowed again")
    xdotool("key", "h", "key", "F1")
    pump(player, lambda: not player.show_hud and not player.show_controls, what="overlays hidden")
    screen, frame = shown_screen(player)
    np.testing.assert_array_equal(screen, expected_screen(frame, (300, 300)))


def test_q_quits(player):
    xdotool("key", "q")
    for _ in range(200):
        if not player.iterate():
            return
    pytest.fail("q did not quit")


def test_no_display_is_one_line_suggesting_headless(world, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER")}
    result = subprocess.run([sys.executable, str(PROJECT_ROOT / "launcher.py"), "--config", str(world),
                             "--device", "cpu"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no display") and "--headless" in lines[0], result.stderr
