"""Helpers of the training tests: tiny datasets on disk and config overrides that point at them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from engine.train.panorama import write_panorama_dataset
from tests.conftest import PROJECT_ROOT, read_json
from tests.tiny_world import dit_patch_size


def panorama_data(folder: Path, oasis_dir: Path, episodes: int = 2, frames: int = 60) -> Path:
    """Panorama recordings (npz + mp4) in `folder`, at the fixture VAE's frame size (vae.json)."""
    vae = read_json(oasis_dir / "vae.json")["kwargs"]
    write_panorama_dataset(folder, episodes=episodes, frames=frames, size=(vae["input_height"], vae["input_width"]),
                           seed=0)
    return folder


def oasis_overrides(data: Path, run_dir: Path, oasis_dir: Path, steps: int, every: int) -> list[str]:
    """oasis_tiny pointed at `data` and `run_dir`, its VAE taken from the fixture folder (sizes from vae.json), its
    DiT's patch one that divides that VAE's latent grid (oasis_tiny's 2 needs an even grid)."""
    vae = read_json(oasis_dir / "vae.json")["kwargs"]
    rows, cols = vae["input_height"] // vae["patch_size"], vae["input_width"] // vae["patch_size"]
    return [f"data.paths=[{data}]", f"output_dir={run_dir}", f"train.steps={steps}",
            f"train.checkpoint_every={every}", "train.progress=false",
            f"model.vae_weights={oasis_dir / 'vae.safetensors'}",
            *(f"model.vae.{key}={value}" for key, value in vae.items()),
            f"model.dit.patch_size={dit_patch_size(rows, cols)}"]


def single_thread_env() -> dict[str, str]:
    """Environment for a training subprocess: one thread per process, the project importable."""
    return os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT_ROOT)}


def train_command(config: str, overrides: list[str], processes: int = 1) -> list[str]:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
                if processes > 1 else [sys.executable])
    return [*launcher, "-m", "engine.train", "--config", config, *overrides]


def run_training(config: str, overrides: list[str], processes: int = 1, timeout: float = 120) -> str:
    """Run `python -m engine.train` (or torchrun with `processes`) to completion; returns its stdout."""
    done = subprocess.run(train_command(config, overrides, processes), cwd=PROJECT_ROOT, env=single_thread_env(),
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def atari_data(folder: Path, episodes: int = 8, size: int = 32) -> Path:
    """Breakout episodes from the real emulator (random policy), as recordings with rewards and ends."""
    from engine.families.diamond.collect_atari import collect_atari

    collect_atari("Breakout", folder, episodes=episodes, max_steps=150, size=size, seed=0)
    return folder


def assert_plays_ema_weights(world: Path, checkpoint: Path, network: str, prefix: str, ticks: int) -> None:
    """The world a run wrote opens, its `network` holds the run's EMA weights (keys under `prefix`), and
    it ticks `ticks` frames of the right size."""
    import torch
    from safetensors.torch import load_file

    from engine.core.loader import open_session

    session = open_session(world, device="cpu", allow_download=False)
    ema = load_file(checkpoint / "ema.safetensors")
    for name, value in getattr(session, network).state_dict().items():
        if f"{prefix}{name}" in ema:
            assert torch.equal(value, ema[f"{prefix}{name}"]), name
    height, width = session.frame_size
    for _ in range(ticks):
        frame = session.step(torch.zeros(session.action_dim)).frame
    assert frame.shape == (height, width, 3) and frame.dtype == torch.uint8
