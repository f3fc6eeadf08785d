"""The schema of the Doom world model's world yaml (assets/worlds/doom.yaml) and of its training config.

`networks.world_model` holds `DoomModelConfig`'s fields (its own rules, frame size against the U-Net depth,
are checked when the network is built); the sampler is DIAMOND's EDM sampler plus the context noise level;
the memory bank is bounded by this machine's memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from engine.core.cli import MAX_SEED
from engine.core.schema import integer, integers, real, reals
from engine.core.world_schema import WorldSchema, check_fits_in_memory
from engine.families.diamond.schema import EdmSampler, SigmaDistribution
from engine.train.schema import TrainSchema


@dataclass
class WorldModel:
    """`engine.families.doom.network.DoomModelConfig`."""

    frame_size: list[int] = integers([64, 80], 1, 4096, length=2)
    context: int = integer(4, 1, 64)
    memory: int = integer(2, 0, 64)
    action_dim: int = integer(7, 1, 1024)
    cond_channels: int = integer(256, 2, 16384)
    channels: list[int] = integers([64, 96, 128], 1, 16384)
    depths: list[int] = integers([2, 2, 2], 1, 64)
    attn_depths: list[int] = integers([0, 0, 1], 0, 1)
    sigma_data: float = real(0.5, above=0, high=100)
    sigma_offset_noise: float = real(0.3, 0, 100)
    pose_scale: float = real(256.0, above=0, high=1e6)
    depth_width: int = integer(0, 0, 4096)  # the depth network's channels (0: none)
    reproject_memory: bool = False  # recalled frames redrawn from the new pose by their depth
    blend_width: int = integer(0, 0, 4096)  # the blend network's channels (0: none)
    blend_newest: bool = False  # the blend also mixes in the newest frame redrawn from the new pose


@dataclass
class Networks:
    world_model: WorldModel = field(default_factory=WorldModel)


@dataclass
class Sampler(EdmSampler):
    context_sigma: float = real(0.005, above=0, high=100)
    memory_guidance: float = real(0.0, 0, 100)  # classifier-free guidance on the recalled frames (0: none)


@dataclass
class Recall:
    """`engine.families.doom.recall.Recall`: which stored frames a pose recalls."""

    points: int = integer(1000, 1, 10**7)
    point_radius: float = real(256.0, above=0, high=1e6)
    max_distance: float = real(384.0, above=0, high=1e7)
    min_overlap: float = real(0.0, 0, 1)
    min_age: int = integer(32, 1, 10**7)


@dataclass
class Memory:
    enabled: bool = True
    capacity: int = integer(512, 32, 10**7)
    position_scale: float = real(32.0, above=0, high=1e6)
    angle_scale: float = real(15.0, above=0, high=360)
    recall: Recall = field(default_factory=Recall)


@dataclass
class Spawn:
    """The real game's frame and pose the dream starts from."""

    game: str = "doom-game"
    seed: int | None = integer(None, 0, MAX_SEED)
    start_offset: int = integer(0, 0, 10**7)


@dataclass
class DoomWorld(WorldSchema):
    networks: Networks = MISSING
    sampler: Sampler = MISSING
    memory: Memory = field(default_factory=Memory)
    spawn: Spawn = field(default_factory=Spawn)
    ground_truth: str | None = None
    frame_skip: int = integer(2, 1, 1000)

    def steps_key(self) -> str:
        return "sampler.num_steps_denoising"

    def image_size(self) -> tuple[int, int]:
        height, width = self.networks.world_model.frame_size
        return height, width

    def check(self) -> None:
        super().check()
        height, width = self.image_size()
        check_fits_in_memory("memory.capacity", self.memory.capacity, self.memory.capacity * 3 * height * width * 4,
                             "a number of frames")


# -- training ------------------------------------------------------------------------------------------------


@dataclass
class ContextNoise:
    """`engine.families.doom.loss.ContextNoise`."""

    clean: float = real(0.3, 0, 1)
    shift: float = real(-2.5, -100, 100)
    sigma_max: float = real(1.0, above=0, high=1e3)
    heavy: float = real(0.15, 0, 1)
    heavy_sigma: list[float] = reals([0.5, 2.0], 0, 1e3, length=2)


@dataclass
class Loss:
    sigma_distribution: SigmaDistribution = field(default_factory=SigmaDistribution)
    context_noise: ContextNoise = field(default_factory=ContextNoise)
    denoising_weight: float = real(1.0, 0, 1e3)  # 0: train the depth or blend network alone, the world model as it is
    depth_weight: float = real(1.0, 0, 1e3)  # the depth network's loss beside the denoising loss
    blend_weight: float = real(0.0, 0, 1e3)  # the blend network's loss, on the play sampler's frames


@dataclass
class Data:
    paths: list[str] = MISSING
    memory_dropout: float = real(0.2, 0, 1)
    stride: int = integer(2, 1, 10**6)
    recall: Recall = field(default_factory=Recall)
    rollout: int = integer(0, 0, 64)  # open-loop ticks the blend network's items run before the frame it mixes


@dataclass
class Model:
    world_model: WorldModel = field(default_factory=WorldModel)


@dataclass
class Init:
    world_model: str | None = None


@dataclass
class DoomTraining(TrainSchema):
    model: Model = MISSING
    data: Data = MISSING
    loss: Loss = field(default_factory=Loss)
    init: Init = field(default_factory=Init)
