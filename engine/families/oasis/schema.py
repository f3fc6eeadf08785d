"""The schema of Oasis world yamls (assets/worlds/minecraft.yaml) and of Oasis training configs.

Network sections are the constructors' arguments (OasisDiT, OasisVAE) with their defaults; the sampler's
defaults are DiffusionForcingSettings'. Sizes are bounded, heads must split the width into RoPE-sized heads
(the constructors' own rule), steps are bounded by the noise levels and the window by memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from engine.core.schema import Invalid, check_patch_size, integer, real
from engine.core.world_schema import Prompt, WorldSchema, check_fits_in_memory
from engine.train.data.sampling import OASIS_LATENT_SCALE
from engine.train.schema import TrainSchema

ROPE_PAIRS = 4  # a head's size must be a multiple of 4: two rotary axes of sin/cos pairs


def _heads(width: int, heads: int, width_key: str, heads_key: str) -> None:
    if width % heads or (width // heads) % ROPE_PAIRS:
        raise Invalid.value(heads_key, heads, f"a divisor of {width_key} ({width}) that leaves a head size "
                                              f"divisible by {ROPE_PAIRS}")


@dataclass
class DiT:
    """OasisDiT's arguments."""

    input_h: int = integer(18, 1, 1024)
    input_w: int = integer(32, 1, 1024)
    patch_size: int = integer(2, 1, 64)
    in_channels: int = integer(16, 1, 1024)
    hidden_size: int = integer(1024, 1, 16384)
    depth: int = integer(16, 1, 256)
    num_heads: int = integer(16, 1, 1024)
    mlp_ratio: float = real(4.0, above=0, high=64)
    external_cond_dim: int = integer(25, 0, 4096)
    max_frames: int = integer(32, 1, 4096)

    def check(self) -> None:
        check_patch_size(self.patch_size, input_h=self.input_h, input_w=self.input_w)
        _heads(self.hidden_size, self.num_heads, "hidden_size", "num_heads")


@dataclass
class VAE:
    """OasisVAE's arguments."""

    latent_dim: int = integer(16, 1, 1024)
    input_height: int = integer(360, 1, 4096)
    input_width: int = integer(640, 1, 4096)
    patch_size: int = integer(20, 1, 256)
    enc_dim: int = integer(1024, 1, 16384)
    enc_depth: int = integer(6, 1, 256)
    enc_heads: int = integer(16, 1, 1024)
    dec_dim: int = integer(1024, 1, 16384)
    dec_depth: int = integer(12, 1, 256)
    dec_heads: int = integer(16, 1, 1024)
    mlp_ratio: float = real(4.0, above=0, high=64)

    def check(self) -> None:
        check_patch_size(self.patch_size, input_height=self.input_height, input_width=self.input_width)
        _heads(self.enc_dim, self.enc_heads, "enc_dim", "enc_heads")
        _heads(self.dec_dim, self.dec_heads, "dec_dim", "dec_heads")


@dataclass
class Networks:
    dit: DiT = field(default_factory=DiT)
    vae: VAE = field(default_factory=VAE)


@dataclass
class Sampler:
    """DiffusionForcingSettings: DDIM steps per frame over `max_noise_level` noise levels, a window of frames."""

    ddim_steps: int = integer(10, 1, 100_000)
    stabilization_level: int = integer(15, 1, 100_000)
    noise_abs_max: float = real(20.0, above=0, high=1e4)
    max_noise_level: int = integer(1000, 1, 100_000)
    max_frames: int | None = integer(None, 2, 4096)

    def check(self) -> None:
        for key in ("ddim_steps", "stabilization_level"):
            if getattr(self, key) > self.max_noise_level:
                raise Invalid.value(key, getattr(self, key), f"an integer in 1..{self.max_noise_level} "
                                                             "(max_noise_level: one noise level per step)")


@dataclass
class OasisWorld(WorldSchema):
    networks: Networks = MISSING
    sampler: Sampler = MISSING
    latent_scale: float = real(OASIS_LATENT_SCALE, above=0, high=1e3)
    prompt: Prompt = field(default_factory=Prompt)

    def steps_key(self) -> str:
        return "sampler.ddim_steps"

    def image_size(self) -> tuple[int, int]:
        return self.networks.vae.input_height, self.networks.vae.input_width

    def check(self) -> None:
        super().check()
        dit = self.networks.dit
        window = self.sampler.max_frames or dit.max_frames
        if window < 2:
            raise Invalid.value("sampler.max_frames", window, "at least 2 frames (context and the frame being made)")
        tokens = (dit.input_h // dit.patch_size) * (dit.input_w // dit.patch_size)
        check_fits_in_memory("sampler.max_frames", window, 2 * dit.depth * window * tokens * dit.hidden_size * 4,
                             "a window whose key/value cache")


# -- training ------------------------------------------------------------------------------------------------


@dataclass
class TrainDiT:
    """OasisDiT's arguments in a training config; the latent geometry defaults to the VAE's (recipe.dit_kwargs)."""

    input_h: int | None = integer(None, 1, 1024)
    input_w: int | None = integer(None, 1, 1024)
    in_channels: int | None = integer(None, 1, 1024)
    patch_size: int = integer(2, 1, 64)
    hidden_size: int = integer(1024, 1, 16384)
    depth: int = integer(16, 1, 256)
    num_heads: int = integer(16, 1, 1024)
    mlp_ratio: float = real(4.0, above=0, high=64)
    external_cond_dim: int = integer(25, 0, 4096)
    max_frames: int = integer(32, 1, 4096)

    def check(self) -> None:
        _heads(self.hidden_size, self.num_heads, "hidden_size", "num_heads")


@dataclass
class Model:
    vae: VAE = field(default_factory=VAE)
    vae_weights: str = MISSING
    vae_repo: str | None = None
    dit: TrainDiT = field(default_factory=TrainDiT)
    latent_scale: float = real(OASIS_LATENT_SCALE, above=0, high=1e3)


@dataclass
class Loss:
    timesteps: int = integer(1000, 1, 100_000)
    snr_clip: float = real(5.0, above=0, high=1e6)
    noise_abs_max: float = real(20.0, above=0, high=1e4)


@dataclass
class Data:
    paths: list[str] = MISSING
    cache: str | None = None
    num_frames: int = integer(MISSING, 2, 4096)
    stride: int = integer(1, 1, 100_000)


@dataclass
class Init:
    dit: str | None = None


@dataclass
class OasisTraining(TrainSchema):
    model: Model = MISSING
    data: Data = MISSING
    loss: Loss = field(default_factory=Loss)
    init: Init = field(default_factory=Init)
