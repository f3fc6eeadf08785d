"""The shipped Doom world (checkpoints/doom/): it loads strictly with its pinned sha256, its dream follows the
real game better than copying the spawn frame, the window shows a frame resembling the real game at that pose,
and its memory switch changes what is recalled."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from app.player import open_player
from engine.actions import doom as actions
from engine.checkpoints.verify import file_sha256
from engine.core.config import WORLDS_DIR, load_world_config
from engine.core.loader import open_session
from engine.core.networks import verify_world
from engine.core.runner import Runner
from engine.errors import CheckpointError
from engine.eval.metrics import psnr_per_frame
from tests.test_app_support import TickLog, find_window, psnr, pump, xdotool
from tests.test_doom_player import shown_frame, window_args

SCRIPT = [actions.encode(["forward"])] * 8 + [actions.encode(["forward"], 10.0)] * 8


def real_game(script: list[np.ndarray]) -> np.ndarray:
    """The real game's frames after each action of `script`, from the dream's spawn point."""
    session = open_session("doom-game", device="cpu")
    try:
        runner = Runner(session)
        return np.stack([runner.step(torch.from_numpy(a)).frame for a in script])
    finally:
        session.close()


def test_the_shipped_checkpoint_loads_strictly_with_its_sha256():
    cfg = load_world_config("doom")
    path = (WORLDS_DIR / str(cfg.checkpoints.files.world_model)).resolve()
    assert path.is_file() and path.stat().st_size <= 20 * 2**20
    assert file_sha256(path) == cfg.checkpoints.sha256.world_model
    reports = verify_world(cfg, {"world_model": path})
    assert all(report.ok for report in reports), [line for r in reports for line in r.lines()]
    assert open_session("doom", device="cpu", allow_download=False).frame_size == (64, 80)


def test_a_changed_checkpoint_is_refused(tmp_path):
    world = yaml.safe_load((WORLDS_DIR / "doom.yaml").read_text())
    world["checkpoints"]["files"]["world_model"] = str((WORLDS_DIR / world["checkpoints"]["files"]["world_model"])
                                                       .resolve())
    world["checkpoints"]["sha256"]["world_model"] = "0" * 64
    (tmp_path / "doom.yaml").write_text(yaml.safe_dump(world))
    with pytest.raises(CheckpointError, match="pins 0000"):
        open_session(str(tmp_path / "doom.yaml"), device="cpu", allow_download=False)


def test_a_headless_dream_from_the_real_spawn_beats_copy_last():
    real = real_game(SCRIPT)
    session = open_session("doom", device="cpu", allow_download=False)
    runner = Runner(session)
    spawn = runner.prompt().frame
    dream = np.stack([runner.step(torch.from_numpy(a)).frame for a in SCRIPT])
    model, copy_last = psnr_per_frame(dream, real).mean(), psnr_per_frame(np.repeat(spawn[None], 16, 0), real).mean()
    print(f"16 frames from the spawn: dream {model:.2f} dB, copy-last {copy_last:.2f} dB")
    assert model > copy_last


def test_the_window_shows_a_frame_like_the_real_game(display, tmp_path):
    real = real_game(SCRIPT[:8])
    with open_player(window_args(tmp_path, "--fps", "0")) as player:
        log = TickLog()
        player.source.listeners.append(log)
        xdotool("windowfocus", find_window())
        player.source.set_paused(True)
        player.source.request_reset()  # back to the spawn, paused: the next ticks are the script's
        pump(player, lambda: log.resets == 1 and not player.source.busy, what="reset while paused")
        log.ticks.clear()
        xdotool("keydown", "w")
        pump(player, lambda: "w" in player.handler.state._held_keys, what="w held")
        for _ in range(8):  # w held for exactly 8 paused single steps: the script's first 8 actions
            before = len(log.ticks)
            player.source.request_step()
            pump(player, lambda n=before: len(log.ticks) > n, what="one step")
        xdotool("keyup", "w")
        pump(player, lambda: player.shown is log.ticks[-1], what="frame on screen")
        player.draw()
        screen = player.renderer.read_screen(player.window.size)
        tick = player.shown
    assert [float(t.action[0]) for t in log.ticks] == [1.0] * 8
    figure = psnr(shown_frame(screen, player.frame_rect, (64, 80)).round().astype(np.uint8), real[7])
    noise = psnr(np.random.default_rng(0).integers(0, 256, real[7].shape, dtype=np.uint8), real[7])
    print(f"window vs the real game at that pose: {figure:.2f} dB (noise: {noise:.2f} dB)")
    assert figure > noise + 6
    assert tick.pose is not None


def test_the_memory_switch_changes_what_is_recalled():
    walk, turn = actions.encode(["forward"]), actions.encode([], actions.KEY_TURN_DEGREES)
    script = [walk] * 15 + [turn] * 13 + [walk] * 15 + [turn] * 13
    ticks = {}
    for memory in ("true", "false"):
        runner = Runner(open_session("doom", device="cpu", overrides=[f"memory.enabled={memory}"]))
        ticks[memory] = [runner.step(torch.from_numpy(a)) for a in script][-1]
    assert (ticks["true"].extras["retrieved_frames"] >= 0).any()
    assert (ticks["false"].extras["retrieved_frames"] == -1).all()
    assert ticks["true"].hud_items[1].startswith("recalled ") and ticks["false"].hud_items[0].startswith("memory off")
