"""Per-family training recipes: what to build, what to read, how to score it, how to play the result.

a family's recipe module (its `Family.recipes`, see `engine.families`) has `build(cfg, device) -> Recipe`. The training module's `forward(batch, rng)`
returns (loss, logs) for one local batch, so DDP/FSDP see exactly one forward per step; networks are
submodules, so their checkpoint keys carry the submodule name (`dit.`, `denoiser.`), which the world yaml
names as `checkpoints.prefixes`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import Dataset

from engine.families import recipe_module
from engine.train.rng import BatchRandom


class Recipe(Protocol):
    model: nn.Module  # the training module: forward(batch, rng) -> (loss, {name: scalar tensor})
    dataset: Dataset

    def prepare(self, batch: dict[str, torch.Tensor], rng: BatchRandom) -> dict[str, torch.Tensor]:
        """Gradient-free work on the device before the forward (e.g. VAE-encoding pixel frames); its
        random draws come from `rng` before the forward's."""
        ...

    def write_world(self, run_dir: Path, weights: Path) -> Path:
        """Write the play-side world yaml (and its prompt) into `run_dir` for the weights file `weights`
        (a path relative to run_dir); returns the yaml's path. A recipe with nothing to play writes what it
        makes instead and returns that file's path (oasis_vae: `vae.safetensors`)."""
        ...


def build_recipe(cfg: DictConfig, device: torch.device) -> Recipe:
    return recipe_module(str(cfg.family)).build(cfg, device)
