"""Random draws of a training step, one generator per sample of the global batch.

Each sample's generator is seeded from (run seed, step, the sample's position in the global batch), so
the draws do not depend on how the batch is split over processes (a 2-process run sees the same noise
as a 1-process run) and a resumed run replays them without any saved generator state.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

_MIX = 0x9E3779B97F4A7C15
_MASK = (1 << 63) - 1
SHARED_POSITION = -1
PROCESS_POSITION = -2


def sample_seed(seed: int, step: int, position: int) -> int:
    """A well-mixed 63-bit seed for one sample of one step (splitmix64 finaliser)."""
    z = (seed * 1_000_003 + step) * _MIX + position * 0xBF58476D1CE4E5B9
    z &= (1 << 64) - 1
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & ((1 << 64) - 1)
    return (z ^ (z >> 31)) & _MASK


class BatchRandom:
    """Per-sample random draws for the local part of a global batch; every draw returns (B, *shape).

    Also serves as a `NoiseSource` (engine.core.noise) for play-side code that draws batch-shaped noise.
    """

    def __init__(self, seed: int, step: int, positions: Sequence[int], device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.seed, self.step = seed, step
        self.generators = [torch.Generator().manual_seed(sample_seed(seed, step, p)) for p in positions]
        self.shared = torch.Generator().manual_seed(sample_seed(seed, step, SHARED_POSITION))

    def shared_uniform(self) -> float:
        """One U[0, 1) draw of the whole global batch, the same in every process (e.g. WorldMAR's
        masking rate, drawn once per batch as the reference does)."""
        return float(torch.rand((), generator=self.shared))

    def process_seed(self, rank: int) -> int:
        """A seed for torch's global generator in process `rank` at this step: randomness the model draws
        itself (dropout) replays exactly on resume, though it depends on the process split."""
        return sample_seed(self.seed, self.step, PROCESS_POSITION - rank)

    @property
    def batch(self) -> int:
        return len(self.generators)

    def _stack(self, draw) -> torch.Tensor:
        return torch.stack([draw(g) for g in self.generators]).to(self.device)

    def normal(self, shape: Sequence[int]) -> torch.Tensor:
        return self._stack(lambda g: torch.randn(tuple(shape), generator=g))

    def uniform(self, shape: Sequence[int]) -> torch.Tensor:
        return self._stack(lambda g: torch.rand(tuple(shape), generator=g))

    def randint(self, high: int, shape: Sequence[int]) -> torch.Tensor:
        return self._stack(lambda g: torch.randint(high, tuple(shape), generator=g))

    def permutation(self, n: int) -> torch.Tensor:
        return self._stack(lambda g: torch.randperm(n, generator=g))

    def draw(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """NoiseSource interface: a standard-normal tensor of `shape`, whose first axis is the batch."""
        if shape[0] != self.batch:
            raise ValueError(f"a per-sample draw needs the batch ({self.batch}) first, got shape {shape}")
        return self.normal(shape[1:]).to(device)
