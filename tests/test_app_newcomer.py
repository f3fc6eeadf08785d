"""What a newcomer sees first: the window's title, a controls overlay that steps aside, text that fits the
window, no mouse-look rows for worlds without a mouse, and --view in the recorded world's window settings."""

from __future__ import annotations

import time

import pygame

from app.hud import TextPanel, controls_lines
from app.input import CONTROLS
from app.player import CONTROLS_SHOWN_S, FIT, open_player, player_controls
from engine.actions.keymap import Keymap
from tests.test_app_support import TickLog, find_window, pump, xdotool
from tests.test_doom_player import window_args


def test_title_controls_and_fitted_text(display, tmp_path):
    with open_player(window_args(tmp_path, "--world", "doom-game", "--window-size", "320x240")) as player:
        assert pygame.display.get_caption()[0] == "doom-game · neural game engine"
        log = TickLog()
        player.source.listeners.append(log)
        pump(player, lambda: len(log.ticks) >= 2, what="ticks")
        assert player.show_controls
        player._controls_until = time.perf_counter()  # as if CONTROLS_SHOWN_S had passed
        player.iterate()
        assert not player.show_controls, f"the overlay hides itself after {CONTROLS_SHOWN_S} s"
        xdotool("windowfocus", find_window())
        xdotool("key", "F1")
        pump(player, lambda: player.show_controls, what="F1 shows the controls again")
        size = player.window.size
        for lines in (player.controls, player._hud):
            width, height = player.text.measure(lines, player.fitted_size(lines, size))
            assert width <= FIT * size[0] or height <= FIT * size[1]


def test_text_measure_is_the_rendered_panel(display):
    panel = TextPanel()
    lines = controls_lines([("W", "forward")], CONTROLS)
    assert panel.render(lines, 16).shape[1::-1] == panel.measure(lines, 16)


def test_worlds_without_a_mouse_list_no_mouse_look():
    atari = [key for key, _ in player_controls(Keymap.load("atari"), replaying=False)]
    doom = [key for key, _ in player_controls(Keymap.load("doom"), replaying=False)]
    assert "mouse" not in atari and "Esc" not in atari
    assert "mouse" in doom


def test_view_opens_in_the_recorded_world_window_settings(display, tmp_path):
    from launcher import build_parser
    from tests.doom_support import collect_recordings

    recording = sorted(collect_recordings(tmp_path, 1, 10).glob("*.npz"))[0]
    args = build_parser().parse_args(["--recordings", str(tmp_path), "--view", str(recording)])
    with open_player(args) as player:
        assert player.window.size == (960, 768), "doom-game's player.window_size, not the default 1280x720"
