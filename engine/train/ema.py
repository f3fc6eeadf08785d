"""Exponential moving average of the trainable parameters (the weights a trained world plays with)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


class EMA:
    """shadow <- decay * shadow + (1 - decay) * param after every optimizer step.

    The effective decay is min(decay, (1 + updates) / (10 + updates)), so early averages are not
    dominated by the random initialisation. Works on sharded (FSDP) parameters as they are: each
    rank averages its own shard.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.names = [name for name, p in model.named_parameters() if p.requires_grad]
        params = dict(model.named_parameters())
        self.shadow = [params[name].detach().clone() for name in self.names]

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        current = [params[name].detach() for name in self.names]
        torch._foreach_lerp_(self.shadow, current, 1 - self.current_decay())
        self.updates += 1

    def parameters(self) -> dict[str, torch.Tensor]:
        """Averaged parameters by name (sharded where the model is)."""
        return dict(zip(self.names, self.shadow, strict=True))

    def state_dict(self) -> dict[str, object]:
        return {"decay": self.decay, "updates": self.updates}

    @torch.no_grad()
    def load(self, averaged: Mapping[str, torch.Tensor], state: Mapping[str, object]) -> None:
        """Restore from the saved averaged parameters and counters."""
        for name, shadow in zip(self.names, self.shadow, strict=True):
            shadow.copy_(averaged[name])
        self.updates = int(state["updates"])
