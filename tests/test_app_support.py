"""Helpers shared by the player tests: an Xvfb server, xdotool, a tiny world whose frames H.264 can
hold, and a driver that runs the player loop until something has happened. (No tests in here.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from app.inference import Tick
from app.player import Player
from launcher import build_parser
from tests.tiny_world import make_tiny_oasis_world

WMCLASS = "wmplayertest"


@contextmanager
def xvfb(size: str = "1280x1024") -> Iterator[str]:
    """A private X server for the session; yields its DISPLAY (':N') once it accepts clients."""
    if shutil.which("Xvfb") is None or shutil.which("xdotool") is None:
        pytest.fail("Xvfb and xdotool are needed: apt-get install -y --no-install-recommends xvfb xdotool "
                    "libegl1 libegl-mesa0 libgl1 libglx-mesa0 libgl1-mesa-dri (.ci/run does)")
    read_fd, write_fd = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", f"{size}x24", "-nolisten", "tcp"],
                              pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        number = pipe.readline().strip()
    if not number:
        server.kill()
        pytest.fail("Xvfb did not start")
    try:
        yield f":{number}"
    finally:
        server.terminate()
        server.wait(timeout=10)


@contextmanager
def display_env(display: str) -> Iterator[None]:
    """Environment for a window on `display` that xdotool can find by class name."""
    wanted = {"DISPLAY": display, "SDL_AUDIODRIVER": "dummy", "PYGAME_HIDE_SUPPORT_PROMPT": "1",
              "SDL_VIDEO_X11_WMCLASS": WMCLASS}
    saved = {key: os.environ.get(key) for key in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def xdotool(*args: str) -> str:
    return subprocess.run(["xdotool", *args], check=True, capture_output=True, text=True, timeout=10).stdout.strip()


def find_window(timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = subprocess.run(["xdotool", "search", "--classname", WMCLASS], capture_output=True, text=True)
        if found.stdout.strip():
            return found.stdout.split()[-1]
        time.sleep(0.05)
    raise AssertionError(f"no window of class {WMCLASS} appeared within {timeout} s")


def flat_patch_world(folder: Path, oasis_dir: Path) -> Path:
    """The tiny test world with its VAE's last layer replaced so each latent token paints one flat
    colour per patch. A random-weight decoder paints per-pixel noise, which no yuv420p video keeps
    (PSNR ~12 dB); flat patches on even pixel boundaries are what real frames are to H.264."""
    world = make_tiny_oasis_world(folder, oasis_dir)
    cfg = yaml.safe_load(world.read_text())
    vae = load_file(cfg["checkpoints"]["files"]["vae"])
    weight = vae["predictor.weight"]
    channels, features = 3, weight.shape[1]
    pixels = weight.shape[0] // channels
    generator = torch.Generator().manual_seed(7)
    colour = torch.randn(channels, 1, features, generator=generator) * (0.1 / features**0.5)
    vae["predictor.weight"] = colour.expand(channels, pixels, features).reshape(-1, features).contiguous()
    vae["predictor.bias"] = torch.zeros_like(vae["predictor.bias"])
    save_file(vae, str(folder / "vae.safetensors"))
    cfg["checkpoints"]["files"]["vae"] = "vae.safetensors"
    world.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return world


def player_args(world: Path, recordings: Path, *extra: str):
    return build_parser().parse_args(["--config", str(world), "--device", "cpu", "--recordings", str(recordings),
                                      "--fps", "0", *extra])


class TickLog:
    """Inference-loop listener that keeps every tick (and counts resets)."""

    def __init__(self) -> None:
        self.ticks: list[Tick] = []
        self.resets = 0

    def on_tick(self, tick: Tick) -> None:
        self.ticks.append(tick)

    def on_reset(self) -> None:
        self.resets += 1


def pump(player: Player, until: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Run the player's loop until `until()` holds."""
    deadline = time.monotonic() + timeout
    while not until():
        assert player.iterate(), "the player quit"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
