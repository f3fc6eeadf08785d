"""A window of the newest entries of a stream (frames, actions), kept on the device without copies per tick."""

from __future__ import annotations

import torch


class Ring:
    """The last `length` entries along dim 1 as one contiguous view, oldest first, with no copy on append:
    every entry is stored twice, at i and i + length."""

    def __init__(self, shape: tuple[int, ...], length: int, device: torch.device,
                 dtype: torch.dtype = torch.float32) -> None:
        self.length = length
        self.data = torch.zeros((1, 2 * length, *shape), device=device, dtype=dtype)
        self.head = 0

    def fill(self, values: torch.Tensor) -> None:
        """values (1, length, ...), oldest first."""
        self.data[:, :self.length] = values
        self.data[:, self.length:] = values
        self.head = 0

    def window(self, last: int) -> torch.Tensor:
        """The newest `last` entries (1, last, ...), oldest first."""
        end = self.head + self.length
        return self.data[:, end - last:end]

    def set_newest(self, value: torch.Tensor) -> None:
        slot = (self.head + self.length - 1) % self.length
        self.data[:, slot] = value
        self.data[:, slot + self.length] = value

    def advance(self) -> None:
        """Drop the oldest entry; the newest slot then holds it until `set_newest`."""
        self.head = (self.head + 1) % self.length
