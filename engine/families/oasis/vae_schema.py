"""The schema of Oasis VAE training configs (family `oasis_vae`, engine.families.oasis.vae_recipe)."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from engine.core.schema import integer, one_of, real
from engine.families.oasis.schema import OASIS_LATENT_SCALE, VAE
from engine.train.schema import TrainSchema


@dataclass
class Model:
    vae: VAE = field(default_factory=VAE)
    latent_scale: float = real(OASIS_LATENT_SCALE, above=0, high=1e3)  # written latents * this have unit std


@dataclass
class Loss:
    reconstruction: str = one_of("l1", "l1", "mse")
    kl_weight: float = real(1e-3, 0, 1e3)


@dataclass
class Data:
    paths: list[str] = MISSING
    stride: int = integer(1, 1, 100_000)


@dataclass
class Init:
    vae: str | None = None


@dataclass
class OasisVAETraining(TrainSchema):
    model: Model = MISSING
    data: Data = MISSING
    loss: Loss = field(default_factory=Loss)
    init: Init = field(default_factory=Init)
