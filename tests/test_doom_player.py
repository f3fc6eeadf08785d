"""The Doom worlds in the real window (Xvfb, Mesa): the game answers the keyboard, and --side-by-side shows
the game beside the dream with the recalled memory frames as HUD thumbnails."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from app.player import open_player
from launcher import build_parser
from tests.doom_support import tiny_doom_world
from tests.test_app_support import TickLog, find_window, psnr, pump, xdotool


def window_args(tmp_path, *extra: str):
    return build_parser().parse_args(["--device", "cpu", "--recordings", str(tmp_path), "--window-size", "480x384",
                                      *extra])


def shown_frame(screen: np.ndarray, rect: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    """The letterboxed frame area of a screenshot, averaged back to the frame's size."""
    x, y, w, h = rect
    top = screen.shape[0] - y - h  # GL rectangles count from the bottom
    area = screen[top:top + h, x:x + w].astype(np.float64)
    fh, fw = size
    return area[: h // fh * fh, : w // fw * fw].reshape(fh, h // fh, fw, w // fw, 3).mean(axis=(1, 3))


def test_the_real_game_plays_in_the_window(display, tmp_path):
    with open_player(window_args(tmp_path, "--world", "doom-game")) as player:
        log = TickLog()
        player.source.listeners.append(log)
        xdotool("windowfocus", find_window())
        pump(player, lambda: len(log.ticks) >= 3, what="first ticks")
        start = log.ticks[-1].pose.copy()
        xdotool("keydown", "w")
        pump(player, lambda: np.linalg.norm(log.ticks[-1].pose[[0, 2]] - start[[0, 2]]) > 64, what="walking")
        xdotool("keyup", "w")
        pump(player, lambda: player.shown is log.ticks[-1] and not player._dirty, what="frame on screen")
        player.draw()
        screen = player.renderer.read_screen(player.window.size)
        tick = player.shown
        Image.fromarray(screen).save(tmp_path / "doom-game.png")
    frame = shown_frame(screen, player.frame_rect, tick.frame.shape[:2])
    assert psnr(frame.round().astype(np.uint8), tick.frame) > 20, "the window shows the game's frame"
    assert any(line.startswith("freedoom1 E1M1") for line in tick.hud_items)


def test_side_by_side_shows_the_game_and_the_dream(display, tmp_path):
    world = tiny_doom_world(tmp_path)
    with open_player(window_args(tmp_path, "--config", str(world), "--side-by-side", "--fps", "0")) as player:
        log = TickLog()
        player.source.listeners.append(log)
        xdotool("windowfocus", find_window())
        xdotool("keydown", "d")
        pump(player, lambda: len(log.ticks) >= 12, what="ticks")
        xdotool("keyup", "d")
        pump(player, lambda: bool(log.ticks[-1].hud_images), timeout=30, what="recalled frames")
        pump(player, lambda: player.shown is not None and bool(player.shown.hud_images), what="thumbnails shown")
        player._hud_time = 0.0
        player.iterate()
        width, height = player.renderer.overlay_size("thumbnails")
    tick = log.ticks[-1]
    assert tick.frame.shape == (64, 80 + 4 + 80, 3)
    assert "truth_pose" in tick.extras and np.isfinite(tick.extras["truth_pose"]).all()
    assert width > 80 and height > 64
    assert tick.hud_items[0].startswith("left: doom-game")


@pytest.mark.parametrize("world", ["doom-game"])
def test_the_doom_keymap_binds_doom_keys(world):
    from engine.actions.keymap import Keymap

    keymap = Keymap.load("doom")
    action = keymap.to_action({"w", "left"}, {"left"}, 0, 0).numpy()
    assert action[0] == 1 and action[4] == 1 and action[6] < 0
    assert keymap.describe(keymap.to_action((), (), 40, 0)).startswith("turn +")
