"""Where a network lives: `.device` and `.dtype` of a module whose parameters share one device and dtype."""

from __future__ import annotations

import torch


class Placed:
    """Mixin for `nn.Module`s: `.device` and `.dtype` read from the first parameter (all share them)."""

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype
