"""The schemas of DIAMOND's world yamls (assets/worlds/atari.yaml, csgo.yaml) and of its training configs.

Network sections are the arguments of the factories in `atari.py` / `csgo.py` (the official
`config/agent/*.yaml` mappings); the sampler section is `EdmSamplerConfig`'s. Sizes are bounded here; the
U-Net's own rules (group norm and attention widths, matching list lengths) are its constructor's, checked when
the networks are built on the meta device (engine.core.networks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from omegaconf import MISSING

from engine.core.schema import Invalid, integer, integers, one_of, real
from engine.core.world_schema import Episode, WorldSchema
from engine.errors import ConfigError
from engine.train.schema import TrainSchema


@dataclass
class InnerModel:
    """The U-Net of a denoiser (`InnerModelConfig` without the flags the factories set)."""

    img_channels: int = integer(MISSING, 1, 64)
    num_steps_conditioning: int = integer(MISSING, 1, 64)
    cond_channels: int = integer(MISSING, 2, 16384)
    depths: list[int] = integers(MISSING, 1, 64)
    channels: list[int] = integers(MISSING, 1, 16384)
    attn_depths: list[int] = integers(MISSING, 0, 1)
    num_actions: int | None = integer(None, 1, 4096)

    def check(self) -> None:
        if self.cond_channels % 2:
            raise Invalid.value("cond_channels", self.cond_channels, "an even number (Fourier features: cos and sin)")
        for key in ("channels", "attn_depths"):
            if len(getattr(self, key)) != len(self.depths):
                raise Invalid.value(key, getattr(self, key), f"a list as long as depths ({len(self.depths)} levels)")


@dataclass
class AtariDenoiser:
    game: str = MISSING
    sigma_data: float = real(MISSING, above=0, high=100)
    sigma_offset_noise: float = real(MISSING, 0, 100)
    inner_model: InnerModel = MISSING
    num_actions: int | None = integer(None, 1, 4096)


@dataclass
class RewEndModel:
    game: str = MISSING
    lstm_dim: int = integer(MISSING, 1, 16384)
    img_channels: int = integer(MISSING, 1, 64)
    img_size: int = integer(MISSING, 1, 1024)
    cond_channels: int = integer(MISSING, 1, 16384)
    depths: list[int] = integers(MISSING, 1, 64)
    channels: list[int] = integers(MISSING, 1, 16384)
    attn_depths: list[int] = integers(MISSING, 0, 1)
    num_actions: int | None = integer(None, 1, 4096)


@dataclass
class ActorCritic:
    game: str = MISSING
    lstm_dim: int = integer(MISSING, 1, 16384)
    img_channels: int = integer(MISSING, 1, 64)
    img_size: int = integer(MISSING, 1, 1024)
    channels: list[int] = integers(MISSING, 1, 16384)
    down: list[int] = integers(MISSING, 0, 1)
    num_actions: int | None = integer(None, 1, 4096)


@dataclass
class AtariNetworks:
    denoiser: AtariDenoiser = MISSING
    rew_end_model: RewEndModel = MISSING
    actor_critic: ActorCritic = MISSING


@dataclass
class EdmSampler:
    """`EdmSamplerConfig`: Euler (order 1) or Heun (2) steps on a Karras schedule from sigma_max to sigma_min."""

    num_steps_denoising: int = integer(MISSING, 1, 1000)
    sigma_min: float = real(MISSING, above=0, high=1e3)
    sigma_max: float = real(MISSING, above=0, high=1e4)
    rho: float = real(MISSING, above=0, high=1e3)
    order: int = one_of(1, 1, 2)
    s_churn: float = real(0.0, 0, 1e3)
    s_tmin: float = real(0.0, 0, infinite=True)
    s_tmax: float = real(math.inf, 0, infinite=True)
    s_noise: float = real(1.0, 0, 100)
    s_cond: float = real(0.0, 0, 100)

    def check(self) -> None:
        if self.sigma_max <= self.sigma_min:
            raise Invalid.value("sigma_max", self.sigma_max, f"a number > sigma_min ({self.sigma_min})")


@dataclass
class Env:
    """The real game and DIAMOND's preprocessing (`AtariEnvSettings`)."""

    size: int = integer(64, 8, 1024)
    frame_skip: int = integer(4, 1, 100)
    noop_max: int = integer(30, 0, 100_000)


@dataclass
class Spawn:
    policy: str = one_of("agent", "agent", "random", "noop")
    warmup_steps: int = integer(0, 0, 10**6)
    frames: int | None = integer(None, 1, 4096)


@dataclass
class AtariWorld(WorldSchema):
    networks: AtariNetworks = MISSING
    sampler: EdmSampler = MISSING
    game: str = MISSING
    env: Env = field(default_factory=Env)
    spawn: Spawn = field(default_factory=Spawn)
    episode: Episode = field(default_factory=Episode)

    def steps_key(self) -> str:
        return "sampler.num_steps_denoising"

    def image_size(self) -> tuple[int, int]:
        return self.env.size, self.env.size

    def check(self) -> None:
        super().check()
        from engine.actions.atari import minimal_action_names

        try:
            minimal_action_names(self.game)
        except ConfigError:
            raise Invalid.value("game", self.game, "an Atari game: one of the 26 Atari-100k games (Alien, Amidar, "
                                                   "... Breakout, ... Pong, ...) or another ALE game") from None


@dataclass
class CsgoDenoiser:
    sigma_data: float = real(MISSING, above=0, high=100)
    sigma_offset_noise: float = real(MISSING, 0, 100)
    inner_model: InnerModel = MISSING
    noise_previous_obs: bool = False
    upsampling_factor: int | None = integer(None, 1, 64)


@dataclass
class CsgoNetworks:
    denoiser: CsgoDenoiser = MISSING
    upsampler: CsgoDenoiser = MISSING


@dataclass
class Preset:
    next_obs: EdmSampler = MISSING
    upsampling: EdmSampler = MISSING


@dataclass
class CsgoSampler:
    preset: str = "fast"
    presets: dict[str, Preset] = MISSING


@dataclass
class SpawnFolder:
    file: str | None = None


@dataclass
class CsgoWorld(WorldSchema):
    networks: CsgoNetworks = MISSING
    sampler: CsgoSampler = MISSING
    frame_size: list[int] = integers(MISSING, 1, 4096, length=2)
    prompt: SpawnFolder = field(default_factory=SpawnFolder)
    episode: Episode = field(default_factory=Episode)

    def steps_key(self) -> str:
        return f"sampler.presets.{self.sampler.preset}.next_obs.num_steps_denoising"

    def image_size(self) -> tuple[int, int]:
        return self.frame_size[0], self.frame_size[1]

    def check(self) -> None:
        super().check()
        presets = self.sampler.presets
        if self.sampler.preset not in presets:
            raise Invalid("sampler.preset", f"'{self.sampler.preset}' is not one of {', '.join(presets) or 'none'}")


# -- training ------------------------------------------------------------------------------------------------


@dataclass
class SigmaDistribution:
    """Log-normal training noise levels (engine.families.diamond.loss.SigmaDistribution)."""

    loc: float = real(-0.4, -100, 100)
    scale: float = real(1.2, above=0, high=100)
    sigma_min: float = real(2e-3, above=0, high=1e3)
    sigma_max: float = real(20.0, above=0, high=1e4)


@dataclass
class Loss:
    num_autoregressive_steps: int = integer(1, 1, 64)
    sigma_distribution: SigmaDistribution = field(default_factory=SigmaDistribution)


@dataclass
class Data:
    paths: list[str] = MISSING
    size: int = integer(64, 8, 1024)


@dataclass
class Init:
    denoiser: str | None = None
    rew_end_model: str | None = None
    actor_critic: str | None = None


@dataclass
class DiamondTraining(TrainSchema):
    model: AtariNetworks = MISSING
    data: Data = MISSING
    game: str = MISSING
    loss: Loss = field(default_factory=Loss)
    init: Init = field(default_factory=Init)
