"""The player's pieces that need no window: letterbox math, input sampling, event mapping, HUD text,
controls from the keymap, command-line options."""

from __future__ import annotations

import argparse

import pygame
import pytest
import torch

from app.hud import HudInfo, TextPanel, controls_text, hud_lines
from app.input import CONTROLS, Command, InputHandler, InputState, game_controls, live_actions
from app.render import letterbox
from engine.actions.keymap import Keymap
from engine.actions.vpt import ACTION_KEYS, PITCH_COLUMN, YAW_COLUMN
from engine.actions.vpt import SPACE as VPT_SPACE
from launcher import build_parser, window_size


@pytest.mark.parametrize(("frame", "window", "rect"), [
    ((360, 640), (1280, 720), (0, 0, 1280, 720)),
    ((360, 640), (1280, 1024), (0, 152, 1280, 720)),
    ((360, 640), (1000, 360), (180, 0, 640, 360)),
    ((40, 60), (300, 300), (0, 50, 300, 200)),
    ((40, 60), (1, 1), (0, 0, 1, 1)),
])
def test_letterbox_keeps_the_aspect_and_centres(frame, window, rect):
    assert letterbox(frame, window) == rect


def test_input_sample_keeps_taps_and_accumulates_motion():
    state = InputState()
    state.key("w", True)
    state.key("space", True)
    state.key("space", False)  # tapped between two ticks: still reaches the next one
    state.button("left", True)
    state.move(3, -1)
    state.move(4, 2)
    first = state.sample()
    assert first.keys == {"w", "space"} and first.buttons == {"left"}
    assert (first.dx, first.dy) == (7, 1) and first.first_event_time <= first.sample_time
    second = state.sample()
    assert second.keys == {"w"} and second.buttons == {"left"} and (second.dx, second.dy) == (0, 0)
    assert second.first_event_time is None
    state.release_all()
    assert state.sample().keys == frozenset()


KEYS = {"q": pygame.K_q, ".": pygame.K_PERIOD, "return": pygame.K_RETURN, "h": pygame.K_h, "f1": pygame.K_F1,
        "f11": pygame.K_F11, ",": pygame.K_COMMA, "f12": pygame.K_F12, "e": pygame.K_e, "w": pygame.K_w}


def key_event(name: str, down: bool = True) -> pygame.event.Event:
    return pygame.event.Event(pygame.KEYDOWN if down else pygame.KEYUP, key=KEYS[name])


def test_events_become_commands_or_held_keys():
    state = InputState()
    handler = InputHandler(state, capture_mouse=False)
    commands = {name: handler.handle(key_event(name)) for name in ("q", ".", "return", "h", "f1", "f11", ",", "f12")}
    assert commands == {"q": [Command.QUIT], ".": [Command.PAUSE], "return": [Command.RESET], "h": [Command.HUD],
                        "f1": [Command.CONTROLS], "f11": [Command.FULLSCREEN], ",": [Command.RECORD],
                        "f12": [Command.SCREENSHOT]}
    assert handler.handle(pygame.event.Event(pygame.QUIT)) == [Command.QUIT]
    assert state.sample().keys == frozenset(), "player controls never reach the world"
    assert handler.handle(key_event("e")) == []
    assert state.sample().keys == {"e"}, "e is the inventory while playing"
    handler.handle(key_event("e", down=False))
    handler.paused = True
    assert handler.handle(key_event("e")) == [Command.STEP]
    assert state.sample().keys == frozenset(), "and a single step while paused"


def test_key_released_while_paused_does_not_stick():
    state = InputState()
    handler = InputHandler(state, capture_mouse=False)
    handler.handle(key_event("e"))
    handler.paused = True
    handler.handle(key_event("e", down=False))
    state.sample()
    assert state.sample().keys == frozenset()


def test_focus_loss_releases_everything():
    state = InputState()
    handler = InputHandler(state, capture_mouse=False)
    handler.handle(key_event("w"))
    state.sample()
    handler.handle(pygame.event.Event(pygame.WINDOWFOCUSLOST))
    assert state.sample().keys == frozenset()


def test_live_actions_apply_the_sensitivity_to_the_keymap_camera():
    state = InputState()
    keymap = Keymap.load("minecraft")
    next_action = live_actions(state, keymap, sensitivity=2.0)
    state.key("w", True)
    state.move(10, -5)
    action, _ = next_action()
    expected = keymap.to_action({"w"}, set(), 20, -10)
    assert torch.equal(action, expected)
    assert action[ACTION_KEYS.index("forward")] == 1 and action[YAW_COLUMN] > 0 and action[PITCH_COLUMN] < 0


def test_controls_come_from_the_keymap():
    rows, shadowed = game_controls(Keymap.load("minecraft"))
    assert ("W", "forward") in rows and ("1-9", "hotbar slot") in rows and ("left mouse", "attack") in rows
    assert shadowed == [], "no keymap key may be shadowed by a player control"
    text = controls_text(rows, CONTROLS)
    assert "forward" in text and "pause / resume" in text and "quit" in text


def test_hud_lines_show_what_the_issue_asks_for():
    info = HudInfo(world="minecraft", device="cuda:0", dtype="bf16", backend="eager", steps=10, model_fps=19.6,
                   stages_ms={"sample": 40.0, "decode": 8.5}, latency_ms=61.0, frame="frame 12",
                   action="forward", recording_s=75.2, pose=(1.0, 64.0, -3.5, 10.0, 90.0), status="PAUSED")
    text = "\n".join(line for line, _ in hud_lines(info))
    for part in ("minecraft · cuda:0 · bf16 · eager", "19.6 fps", "tick 48.5 ms (sample 40.0, decode 8.5)",
                 "input to display 61 ms", "10 denoising steps", "frame 12", "REC 01:15", "pose x 1.0 y 64.0 z -3.5",
                 "yaw 90°", "PAUSED"):
        assert part in text
    quiet = "\n".join(line for line, _ in hud_lines(HudInfo(world="w", device="cpu", dtype="fp32", backend="eager")))
    assert "REC" not in quiet and "pose" not in quiet and "fps" not in quiet
    viewing = HudInfo(world="w", device="cpu", dtype="fp32", backend="eager", model_fps=20.0)
    assert "model 20.0 fps" in [line for line, _ in hud_lines(viewing)], "no tick times without a model"
    game = HudInfo(world="doom-game", device="cpu", dtype="fp32", backend="vizdoom", steps=0, frame="frame 3")
    assert "denoising" not in "\n".join(line for line, _ in hud_lines(game)), "the real game denoises nothing"


def test_describe_action_names_keys_and_camera_degrees():
    action = Keymap.load("minecraft").to_action({"w", "space"}, {"left"}, 40, 0)
    assert VPT_SPACE.describe(action) == "forward jump attack camera pitch +0.0° yaw +6.0°"
    assert VPT_SPACE.describe(torch.zeros(len(ACTION_KEYS))) == "none"
    assert VPT_SPACE.describe(torch.zeros(4)) is None


def test_text_panel_is_rgba_with_a_tab_column():
    image = TextPanel().render([("key\twhat it does", (255, 255, 255)), ("one column only", (255, 0, 0))], 16)
    assert image.ndim == 3 and image.shape[2] == 4 and image.dtype.name == "uint8"
    assert image[..., 3].min() > 0, "a translucent panel behind the text"


def test_player_options_parse():
    args = build_parser().parse_args(["--window-size", "800x450", "--filter", "sharp", "--fps", "0", "--record",
                                      "--mouse-sensitivity", "0.5", "--keymap", "mine.yaml"])
    assert args.window_size == (800, 450) and args.filter == "sharp" and args.fps == 0 and args.record
    assert args.mouse_sensitivity == 0.5 and str(args.keymap) == "mine.yaml"
    for bad in ("800", "0x10", "axb"):
        with pytest.raises(argparse.ArgumentTypeError):
            window_size(bad)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--replay", "a.npz", "--view", "b.mp4"])
