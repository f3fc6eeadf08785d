"""The schema of WorldMAR world yamls (assets/worlds/minecraft-mar.yaml) and of WorldMAR training configs.

`networks.worldmar` is WorldMAR's constructor, `networks.vae` the Oasis VAE's; diffusion step spacings are
checked by the respacing code itself (`space_timesteps`), the memory bank's capacity by this machine's memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from engine.core.schema import Invalid, check_patch_size, integer, one_of, real, reals
from engine.core.world_schema import Prompt, WorldSchema, check_fits_in_memory
from engine.families.oasis.schema import VAE
from engine.train.schema import TrainSchema

DIFFUSION_TIMESTEPS = 1000  # the diffusion head's training timesteps (engine.families.worldmar.diffusion)


def _check_spacing(key: str, spacing: str | int) -> None:
    """A respacing of the head's diffusion ("S", "S1,S2,...", "ddimN") that keeps at least one step."""
    from engine.families.worldmar.diffusion import space_timesteps

    try:
        kept = space_timesteps(DIFFUSION_TIMESTEPS, spacing)
    except ValueError:
        kept = []
    if not kept or min(kept) < 0:
        raise Invalid.value(key, spacing, f"a number of steps in 1..{DIFFUSION_TIMESTEPS} (or 'S1,S2,...' "
                                          "sections, or 'ddimN')")


@dataclass
class WorldMARNetwork:
    """WorldMAR's arguments."""

    num_frames: int = integer(5, 2, 64)
    num_mem_frames: int = integer(2, 0, 64)
    num_prev_frames: int = integer(3, 1, 64)
    patch_size: int = integer(2, 1, 64)
    vae_embed_dim: int = integer(16, 1, 1024)
    vae_seq_h: int = integer(18, 1, 1024)
    vae_seq_w: int = integer(32, 1, 1024)
    st_embed_dim: int = integer(256, 1, 16384)
    encoder_depth: int = integer(8, 1, 256)
    encoder_num_heads: int = integer(8, 1, 1024)
    decoder_depth: int = integer(8, 1, 256)
    decoder_num_heads: int = integer(8, 1, 1024)
    diffloss_w: int = integer(256, 1, 16384)
    diffloss_d: int = integer(3, 1, 256)
    num_sampling_steps: str | int = "100"
    diffusion_batch_mul: int = integer(4, 1, 64)
    prev_masking_rate: float = real(0.25, 0, 1)
    mask_ratio_min: float = real(0.7, 0, 1)
    proj_dropout: float = real(0.1, 0, 0.99)
    attn_dropout: float = real(0.1, 0, 0.99)
    warmstart: bool = False
    reference_compat: bool = False

    def check(self) -> None:
        for key in ("encoder_num_heads", "decoder_num_heads"):
            heads = getattr(self, key)
            if self.st_embed_dim % heads or (self.st_embed_dim // heads) % 2:
                raise Invalid.value(key, heads, f"a divisor of st_embed_dim ({self.st_embed_dim}) that leaves an "
                                                "even head size")
        check_patch_size(self.patch_size, vae_seq_h=self.vae_seq_h, vae_seq_w=self.vae_seq_w)
        _check_spacing("num_sampling_steps", self.num_sampling_steps)


@dataclass
class Networks:
    worldmar: WorldMARNetwork = field(default_factory=WorldMARNetwork)
    vae: VAE = field(default_factory=VAE)


@dataclass
class Sampler:
    mar_iters: int = integer(MISSING, 1, 100_000)
    diffusion_steps: str | int | None = None

    def check(self) -> None:
        if self.diffusion_steps is not None:
            _check_spacing("diffusion_steps", self.diffusion_steps)


@dataclass
class Memory:
    """The pose memory bank and its retrieval (engine.families.worldmar.world.MEMORY_DEFAULTS)."""

    capacity: int = integer(4096, 1, 10**7)
    keep_recent: int = integer(20, 0, 10**7)
    position_scale: float = real(2.0, above=0, high=1e6)
    angle_scale: float = real(15.0, above=0, high=360)
    refresh_rows: int = integer(8, 1, 10**6)
    num_prev_frames: int = integer(1, 1, 64)
    num_mem_frames: int = integer(2, 0, 64)
    points: int = integer(10000, 1, 10**7)
    point_radius: float = real(30.0, above=0, high=1e6)
    min_overlap: float = real(0.0, 0, 1)
    retrieval_backend: str = one_of("auto", "auto", "torch", "triton")

    def check(self) -> None:
        if self.keep_recent >= self.capacity:
            raise Invalid.value("keep_recent", self.keep_recent, f"0 <= keep_recent < capacity ({self.capacity})")


@dataclass
class WorldMARWorld(WorldSchema):
    networks: Networks = MISSING
    sampler: Sampler = MISSING
    memory: Memory = field(default_factory=Memory)
    spawn_pose: list[float] = reals([0.0, 64.0, 0.0, 0.0, 0.0], -1e7, 1e7, length=5)
    prompt: Prompt = field(default_factory=Prompt)

    def steps_key(self) -> str:
        return "sampler.diffusion_steps"

    def image_size(self) -> tuple[int, int]:
        return self.networks.vae.input_height, self.networks.vae.input_width

    def check(self) -> None:
        super().check()
        model, vae = self.networks.worldmar, self.networks.vae
        tokens = (model.vae_seq_h // model.patch_size) * (model.vae_seq_w // model.patch_size)
        if self.sampler.mar_iters > tokens:
            raise Invalid.value("sampler.mar_iters", self.sampler.mar_iters, f"an integer in 1..{tokens} (the "
                                                                             "tokens of a frame)")
        tokens = (vae.input_height // vae.patch_size) * (vae.input_width // vae.patch_size)
        check_fits_in_memory("memory.capacity", self.memory.capacity,
                             self.memory.capacity * tokens * vae.latent_dim * 4, "a number of frames")


# -- training ------------------------------------------------------------------------------------------------


@dataclass
class Model:
    worldmar: WorldMARNetwork = field(default_factory=WorldMARNetwork)
    vae: VAE = field(default_factory=VAE)
    vae_weights: str | None = None
    vae_repo: str | None = None


@dataclass
class Data:
    paths: list[str] = MISSING
    cache: str | None = None
    reference_compat: bool = False
    posterior: str = one_of("sample", "sample", "mean")
    num_prev_frames: int = integer(1, 1, 64)
    num_mem_frames: int = integer(2, 0, 64)
    memory_size: int = integer(100, 1, 10**7)
    memory_distance: int = integer(1000, 1, 10**9)
    prev_distance: int = integer(1, 1, 10**9)


@dataclass
class Init:
    worldmar: str | None = None


@dataclass
class WorldMARTraining(TrainSchema):
    model: Model = MISSING
    data: Data = MISSING
    init: Init = field(default_factory=Init)
