"""Which samples each optimizer step trains on: a pure function of (seed, step), so a resumed run and a
run split over several processes see exactly the batches of a single uninterrupted run."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, Sampler

from engine.errors import ConfigError


class StepBatches(Sampler[list[tuple[int, int]]]):
    """Step s trains on entries k*B .. (k+1)*B-1 of epoch e's permutation (e, k = divmod(s, steps per
    epoch); an epoch drops its last partial batch). Process `rank` gets its contiguous share of that
    global batch; every index is paired with its epoch for `EpochDataset`."""

    def __init__(self, size: int, global_batch: int, seed: int, start_step: int, stop_step: int,
                 rank: int = 0, world_size: int = 1) -> None:
        if global_batch % world_size:
            raise ConfigError(f"train.batch_size {global_batch} is not divisible by the {world_size} processes")
        if size < global_batch:
            raise ConfigError(f"the dataset has {size} samples, fewer than train.batch_size {global_batch}")
        self.size, self.global_batch, self.seed = size, global_batch, seed
        self.start_step, self.stop_step = start_step, stop_step
        self.local = global_batch // world_size
        self.offset = rank * self.local
        self.steps_per_epoch = size // global_batch

    def epoch_order(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))

    def positions(self) -> list[int]:
        """Positions of this process's samples in the global batch (they seed the per-sample draws)."""
        return list(range(self.offset, self.offset + self.local))

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order, order_epoch = None, -1
        for step in range(self.start_step, self.stop_step):
            epoch, k = divmod(step, self.steps_per_epoch)
            if epoch != order_epoch:
                order, order_epoch = self.epoch_order(epoch), epoch
            first = k * self.global_batch + self.offset
            yield [(epoch, int(i)) for i in order[first:first + self.local]]

    def __len__(self) -> int:
        return self.stop_step - self.start_step


class EpochDataset(Dataset):
    """Reads `(epoch, index)` keys: tells the dataset its epoch (`set_epoch`, which seeds its per-item
    draws) before reading, also inside DataLoader worker processes, which hold their own copies."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.epoch: int | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key
        if epoch != self.epoch and hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
            self.epoch = epoch
        return self.dataset[index]
