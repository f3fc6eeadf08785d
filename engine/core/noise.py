"""Injectable random draws: every sampler asks a NoiseSource, so tests can replay reference noise."""

from __future__ import annotations

from typing import Protocol

import torch


class NoiseSource(Protocol):
    def draw(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """A standard-normal float32 tensor of `shape` on `device`."""
        ...


class ResettableNoise(NoiseSource, Protocol):
    """The noise of a world's session: `reset` restarts the stream, so a reset world replays its frames."""

    def reset(self) -> None:
        ...


class SeededNoise:
    """Draws from a seeded torch.Generator on the target device (no host round trip)."""

    def __init__(self, seed: int, device: torch.device | str = "cpu") -> None:
        self.seed = seed
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device)
        self.reset()

    def reset(self) -> None:
        self.generator.manual_seed(self.seed)

    def draw(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator, device=self.device, dtype=torch.float32).to(device)


class ReplayNoise:
    """Hands out slices of a pre-drawn tensor along its first axis, one per draw, in order."""

    def __init__(self, draws: torch.Tensor) -> None:
        self.draws = draws
        self.index = 0

    def reset(self) -> None:
        self.index = 0

    def draw(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        if self.index >= self.draws.shape[0]:
            raise IndexError(f"replayed noise exhausted after {self.index} draws")
        sample = self.draws[self.index]
        self.index += 1
        if tuple(sample.shape) != tuple(shape):
            raise ValueError(f"replayed noise has shape {tuple(sample.shape)}, the sampler asked for {tuple(shape)}")
        return sample.to(device=device, dtype=torch.float32)
