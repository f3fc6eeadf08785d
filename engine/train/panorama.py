"""A small panorama world for the tiny training configs: recordings (engine/recordings format) of a camera
looking around a seeded 360-degree landscape, driven by VPT camera actions.

The next frame is the previous view turned by the action's camera change, so a world model has real,
action-dependent dynamics to learn, in a minute on a CPU. Poses (pitch, yaw) are exact.

    python -m engine.train.panorama --out data/panorama [--episodes 4 --frames 200 --size 40x60 --seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from engine.actions.vpt import ACTION_KEYS, PITCH_COLUMN, YAW_COLUMN, camera_value
from engine.recordings import SegmentWriter

PITCH_LIMIT = 30.0  # degrees up or down
YAW_STEPS = (-4, -2, -1, 0, 0, 1, 2, 4)  # camera bins (0.5 degrees each) a tick may turn by
PITCH_STEPS = (-2, -1, 0, 0, 0, 1, 2)


def periodic_noise(height: int, width: int, waves: int, generator: torch.Generator) -> torch.Tensor:
    """(height, width) sum of random sinusoids with whole periods across the width (so it wraps), in [0, 1]."""
    y = torch.linspace(0, 1, height)[:, None]
    x = torch.linspace(0, 1, width + 1)[:width][None, :]
    field = torch.zeros(height, width)
    for _ in range(waves):
        kx = int(torch.randint(1, 24, (1,), generator=generator))
        ky = float(torch.rand(1, generator=generator)) * 12
        phase = float(torch.rand(1, generator=generator)) * 2 * np.pi
        field += torch.sin(2 * np.pi * (kx * x + ky * y) + phase) / (kx + ky) ** 0.5
    return (field - field.min()) / (field.max() - field.min())


def landscape(height: int, width: int, seed: int) -> np.ndarray:
    """A seeded (height, width, 3) uint8 panorama, periodic in x so the view wraps around 360 degrees:
    sky above a hilly horizon, textured ground below it."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.arange(height, dtype=torch.float32)[:, None]
    horizon = height * (0.35 + 0.3 * periodic_noise(1, width, 6, generator))
    ground = (rows >= horizon).float()[None]
    texture = torch.stack([periodic_noise(height, width, 12, generator) for _ in range(3)])
    sky = torch.tensor([0.45, 0.65, 0.95])[:, None, None] * (1 - 0.4 * rows / height) + 0.15 * texture
    soil = torch.tensor([0.25, 0.5, 0.15])[:, None, None] + 0.6 * (texture - 0.5)
    image = (sky * (1 - ground) + soil * ground).clamp(0, 1)
    return (image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)


def view(pano: np.ndarray, pitch: float, yaw: float, size: tuple[int, int]) -> np.ndarray:
    """The (h, w) crop looking at (pitch, yaw) degrees: yaw wraps around the panorama, pitch slides the window."""
    height, width = pano.shape[:2]
    h, w = size
    x0 = round((yaw % 360.0) / 360.0 * width)
    y0 = round((PITCH_LIMIT + pitch) / (2 * PITCH_LIMIT) * (height - h))
    cols = (np.arange(x0, x0 + w) - w // 2) % width
    return pano[y0:y0 + h][:, cols]


def write_episode(stem: Path, pano: np.ndarray, frames: int, size: tuple[int, int], seed: int) -> Path:
    """One recording: frame 0 from a random heading, then `frames - 1` random camera actions."""
    rng = np.random.default_rng(seed)
    pitch, yaw = 0.0, float(rng.uniform(0, 360))
    yaw_bins = pitch_bins = 0
    with SegmentWriter(stem, "panorama", fps=20, metadata={"generator": "engine.train.panorama", "seed": seed}) as rec:
        for t in range(frames):
            action = np.zeros(len(ACTION_KEYS), dtype=np.float32)
            if t > 0:
                if rng.random() < 0.3:  # actions persist for a few ticks, as a player's do
                    yaw_bins, pitch_bins = int(rng.choice(YAW_STEPS)), int(rng.choice(PITCH_STEPS))
                pitch_bins = pitch_bins if abs(pitch + pitch_bins * 0.5) <= PITCH_LIMIT else -pitch_bins
                action[PITCH_COLUMN] = camera_value(40 + pitch_bins)
                action[YAW_COLUMN] = camera_value(40 + yaw_bins)
                pitch, yaw = pitch + pitch_bins * 0.5, (yaw + yaw_bins * 0.5) % 360.0
            rec.append(view(pano, pitch, yaw, size), action, pose=(0.0, 0.0, 0.0, pitch, yaw), timestamp=t / 20)
    return stem.with_suffix(".npz")


def write_panorama_dataset(out: Path, episodes: int = 4, frames: int = 200, size: tuple[int, int] = (40, 60),
                           seed: int = 0) -> list[Path]:
    """`episodes` recordings `out/episode_NNN.npz` (+ .mp4) of one landscape seen from random headings."""
    h, w = size
    pano = landscape(int(h * 2.5), w * 12, seed)
    return [write_episode(out / f"episode_{k:03d}", pano, frames, size, seed * 1000 + k) for k in range(episodes)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.train.panorama", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/panorama"))
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--size", default="40x60", help="frame HEIGHTxWIDTH")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    h, w = (int(v) for v in args.size.lower().split("x"))
    for path in write_panorama_dataset(args.out, args.episodes, args.frames, (h, w), args.seed):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
