"""The keys every training config shares, and the base of each family's training schema (`Family.train_schemas`).

A family's schema derives from `TrainSchema` with its own `model`, `data`, `loss` and `init` (one optional
starting-weights path per trained network). The defaults of `optim`, `train` and `distributed` are what a config
leaves out (engine.train.config merges them under it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from engine.backends.device import DEVICE_NAME
from engine.core.cli import MAX_SEED
from engine.core.schema import integer, matching, one_of, real, reals


@dataclass
class Optim:
    """AdamW with warm-up and cosine decay to `min_lr_ratio`, gradient clipping (0: none)."""

    lr: float = real(1e-4, above=0, high=10)
    betas: list[float] = reals([0.9, 0.99], 0, 0.999999, length=2)
    eps: float = real(1e-8, above=0, high=1)
    weight_decay: float = real(0.01, 0, 10)
    warmup_steps: int = integer(100, 0, 10**9)
    min_lr_ratio: float = real(0.1, 0, 1)
    grad_clip: float = real(1.0, 0, 1e6)


@dataclass
class Train:
    steps: int = integer(1000, 1, 10**9)
    batch_size: int = integer(8, 1, 65536)
    device: str = matching("auto", DEVICE_NAME, "auto, cpu, cuda or cuda:N")
    precision: str = one_of("bf16", "bf16", "fp32")
    ema_decay: float = real(0.999, 0, 1)
    checkpoint_every: int = integer(500, 1, 10**9)
    keep_last: int = integer(2, 0, 10**6)
    cpu_autocast: bool = False
    num_workers: int = integer(0, 0, 256)
    resume: bool = True
    progress: bool = True


@dataclass
class Distributed:
    strategy: str = one_of("ddp", "ddp", "fsdp")


@dataclass
class TrainSchema:
    """The keys of every training config; `model`, `data`, `loss` and `init` are the family's."""

    family: str = MISSING
    model: Any = MISSING
    data: Any = MISSING
    name: str | None = None
    seed: int = integer(0, 0, MAX_SEED)
    output_dir: str = "runs/${name}"
    init: Any = field(default_factory=dict)
    optim: Optim = field(default_factory=Optim)
    train: Train = field(default_factory=Train)
    distributed: Distributed = field(default_factory=Distributed)
    world: dict[str, Any] = field(default_factory=dict)
