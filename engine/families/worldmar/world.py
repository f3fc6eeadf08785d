"""The WorldMAR world (minecraft-mar): Minecraft with a pose-indexed memory of generated frames.

Tick stages (all on the device):

1. `pose`: the player's pose (x, y, z, pitch, yaw) integrated from the action (engine.memory.integrator);
2. `memory`: the stored frames whose views overlap the new pose's most are retrieved, exactly as
   WorldMAR's dataloader picks its context: candidates are the previous frame then the other stored
   frames oldest to newest, the previous frame is always taken and the greedy FOV-overlap selection
   adds memory frames (engine.memory.retrieval, min_overlap 0); the context is sorted newest first
   and padded, with timestamps and Plücker maps as the model was trained with;
3. `sample`: WorldMAR's masked autoregressive sampler generates the next frame's VAE latents;
4. `decode`: the Oasis VAE decoder turns them into an RGB frame;
   with `--backend compile|trt` both run as static-shape calls through the backend
   (engine/families/worldmar/sampler.py; `build_trt.py --world minecraft-mar` exports the same units);
5. `store`: latent, pose, action and frame number go into the memory bank (engine.memory.bank).

Actions: the engine's 25-dim VPT vector (the keymap's, with 0.5° camera bins) is what the player
and the recordings use; the model receives it in the WorldMAR dataset's encoding, whose camera
entries are `trunc(degrees / 6) · 0.025` (fixture README sec. 7, quirk D1).

No public WorldMAR weights exist yet (nwrousell/world-mar publishes code only): the world config
points the `worldmar` role at the user's own checkpoint (see assets/worlds/minecraft-mar.yaml).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from engine.actions.vpt import ACTION_KEYS, CAMERA_CENTER_BIN
from engine.backends.base import Backend
from engine.checkpoints.loading import load_into
from engine.core.noise import SeededNoise
from engine.core.prompt import load_prompt_frames
from engine.core.session import SessionBase, SessionOptions, StepResult, session_backend
from engine.core.spawn import resolve_prompt_file
from engine.errors import CheckpointError, ConfigError
from engine.families.oasis.vae import OasisVAE
from engine.families.worldmar.conditioning import frame_timestamps
from engine.families.worldmar.mar import MARSampler, MARSettings
from engine.families.worldmar.model import WorldMAR, load_reference_checkpoint
from engine.families.worldmar.sampler import BackendMARSampler
from engine.memory.bank import BankSettings, MemoryBank
from engine.memory.integrator import PoseIntegrator
from engine.memory.retrieval import BACKENDS, generate_points_in_sphere, retrieve

NETWORKS = {"worldmar": WorldMAR, "vae": OasisVAE}
# Keys of a reference trainer checkpoint that belong to another network (its frozen VAE): loading and
# `python -m engine.checkpoints verify` skip them.
IGNORED_KEY_PREFIXES = {"worldmar": ("vae.",)}
CAMERA_COLUMNS = [ACTION_KEYS.index("cameraX"), ACTION_KEYS.index("cameraY")]
DATASET_CAMERA_BINS = 12  # 6° per dataset camera unit = 12 engine bins of 0.5°
DATASET_CAMERA_SCALER = 0.025
DEFAULT_SPAWN_POSE = (0.0, 64.0, 0.0, 0.0, 0.0)


def load_weights(module: torch.nn.Module, path: Path, prefix: str | None = None) -> None:
    """Checkpoint loader for this family: WorldMAR files may be the reference trainer's Lightning
    checkpoints, whose `vae.*` entries belong to the separate VAE network and are dropped here."""
    if isinstance(module, WorldMAR):
        load_reference_checkpoint(module, path, prefix)
    else:
        load_into(module, path, prefix)


def dataset_action(action: torch.Tensor) -> torch.Tensor:
    """Engine VPT action(s) (..., 25) -> the WorldMAR dataset's encoding: binary columns unchanged, each
    camera column `trunc(degrees / 6) · 0.025` (the engine's columns are (bin − 40) / 40 of 0.5° bins)."""
    out = action.to(torch.float32).clone()
    bins = torch.round(out[..., CAMERA_COLUMNS] * CAMERA_CENTER_BIN)
    out[..., CAMERA_COLUMNS] = torch.trunc(bins / DATASET_CAMERA_BINS) * DATASET_CAMERA_SCALER
    return out


MEMORY_DEFAULTS = {"capacity": 4096, "num_prev_frames": 1, "num_mem_frames": 2, "points": 10000,
                   "point_radius": 30.0, "min_overlap": 0.0, "retrieval_backend": "auto",
                   **asdict(BankSettings())}


def memory_settings(cfg: DictConfig) -> dict:
    """The world's `memory:` section over the defaults, checked."""
    given = OmegaConf.to_container(cfg.get("memory") or {}, resolve=True)
    unknown = sorted(set(given) - set(MEMORY_DEFAULTS))
    if unknown:
        raise ConfigError(f"world '{cfg.name}': memory.{unknown[0]} is unknown (expected some of "
                          f"{', '.join(MEMORY_DEFAULTS)})")
    memory = MEMORY_DEFAULTS | given
    if memory["retrieval_backend"] not in BACKENDS:
        raise ConfigError(f"world '{cfg.name}': memory.retrieval_backend must be one of {', '.join(BACKENDS)}, "
                          f"got {memory['retrieval_backend']!r}")
    if not 0 <= memory["keep_recent"] < memory["capacity"] or memory["num_prev_frames"] < 1:
        raise ConfigError(f"world '{cfg.name}': memory needs 0 <= keep_recent < capacity and num_prev_frames >= 1, "
                          f"got keep_recent {memory['keep_recent']}, capacity {memory['capacity']}, "
                          f"num_prev_frames {memory['num_prev_frames']}")
    return memory


class WorldMARSession(SessionBase):
    """One player in a WorldMAR world; `step` runs the five stages of the module docstring."""

    family = "worldmar"

    def __init__(self, cfg: DictConfig, model: WorldMAR, vae: OasisVAE, *, steps: int | None = None, seed: int = 0,
                 checkpoint_files: dict[str, Path] | None = None, backend: Backend | None = None) -> None:
        super().__init__(cfg, device=model.device, dtype=model.dtype, action_dim=len(ACTION_KEYS),
                         frame_size=vae.image_size, steps=0, seed=seed, sampler="mar",
                         checkpoint_files=checkpoint_files, backend=backend)
        self.model, self.vae = model.eval(), vae.eval()
        self.memory = memory_settings(cfg)
        self.num_context = int(self.memory["num_prev_frames"]) + int(self.memory["num_mem_frames"])
        self._check_geometry(cfg)
        sampler_cfg = cfg.sampler
        diffusion_steps = steps or sampler_cfg.get("diffusion_steps")
        self.settings = MARSettings(mar_iters=int(sampler_cfg.mar_iters),
                                    diffusion_steps=None if diffusion_steps is None else str(diffusion_steps))
        self.noise = SeededNoise(seed, self.device)
        self.dropout_noise = SeededNoise(seed + 1, self.device)
        # Eager keeps the plain MARSampler; any other backend runs the frame's static-shape units
        # (engine/families/worldmar/sampler.py) and the VAE decoder through it, as the Oasis world does.
        fast = self.backend.name != "eager"
        if fast:
            self.sampler = BackendMARSampler(model, self.settings, self.noise, self.backend)
        else:
            self.sampler = MARSampler(model, self.settings, self.noise, self.dropout_noise)
        tokens = torch.zeros((1, vae.grid[0] * vae.grid[1], vae.latent_dim), device=self.device, dtype=self.dtype)
        self._decode_latents = self.backend.compile_step(vae.decode, (tokens,), "vae_decoder") if fast else vae.decode
        self.steps = self.sampler.diffusion.num_timesteps
        spawn = tuple(float(v) for v in cfg.get("spawn_pose", DEFAULT_SPAWN_POSE))
        self.integrator = PoseIntegrator(spawn, self.device)
        latent_shape = (model.frame_tokens * model.patch_size**2, model.vae_embed_dim)
        settings = BankSettings(**{key: self.memory[key] for key in asdict(BankSettings())})
        self.bank = MemoryBank(int(self.memory["capacity"]), latent_shape, self.action_dim, self.device,
                               settings=settings)
        self.points = generate_points_in_sphere(int(self.memory["points"]), float(self.memory["point_radius"]),
                                                generator=torch.Generator().manual_seed(seed)).to(self.device)
        frames = model.num_frames
        self._latents = torch.zeros((1, frames, *latent_shape), dtype=torch.float32, device=self.device)
        self._poses = torch.zeros((1, frames, 5), dtype=torch.float32, device=self.device)
        self._retrieved = torch.full((self.num_context,), -1, dtype=torch.int64, device=self.device)
        self._prompt_latents: torch.Tensor | None = None
        self._frames = 0

    def _check_geometry(self, cfg: DictConfig) -> None:
        model, vae = self.model, self.vae
        latent_grid = (model.grid[0] * model.patch_size, model.grid[1] * model.patch_size)
        if tuple(vae.grid) != latent_grid or vae.latent_dim != model.vae_embed_dim:
            raise ConfigError(f"world '{cfg.name}': the VAE (networks.vae) gives a {vae.grid[0]}x{vae.grid[1]} grid of "
                              f"{vae.latent_dim}-channel latents, WorldMAR (networks.worldmar) expects "
                              f"{latent_grid[0]}x{latent_grid[1]}x{model.vae_embed_dim}")
        if model.num_frames != 1 + self.num_context:
            raise ConfigError(f"world '{cfg.name}': networks.worldmar.num_frames is {model.num_frames}, but "
                              f"memory.num_prev_frames + memory.num_mem_frames + 1 is {1 + self.num_context}")

    @property
    def pose(self) -> torch.Tensor:
        return self.integrator.pose

    @property
    def frame_index(self) -> int:
        return self._frames

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames (P, 3, H, W) in [0, 1] -> raw VAE latents (P, H'*W', C) (posterior means)."""
        mean, _ = self.vae.encode(frames.to(self.device, self.dtype) * 2 - 1)
        return mean.float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Raw latents (1, H'*W', C) -> uint8 RGB frame (H, W, 3) on the device."""
        image = (self._decode_latents(latents.to(self.dtype).contiguous()).float() + 1) / 2
        return (image.clamp(0, 1) * 255).to(torch.uint8)[0].permute(1, 2, 0)

    @torch.no_grad()
    def reset(self, prompt_frames: torch.Tensor | None = None) -> None:
        """Start (or restart, with no arguments) from prompt frames (P, 3, H, W) in [0, 1]: they enter the
        empty memory at the spawn pose as frames 0 .. P-1."""
        if prompt_frames is not None:
            self._prompt_latents = self.encode(prompt_frames)
        if self._prompt_latents is None:
            raise RuntimeError("reset() needs prompt frames the first time")
        self.noise.reset()
        self.dropout_noise.reset()
        self.integrator.reset()
        self.bank.clear()
        zero = torch.zeros(self.action_dim, device=self.device)
        for number, latent in enumerate(self._prompt_latents):
            self.bank.insert(latent, self.integrator.pose, zero, number)
        self._frames = len(self._prompt_latents)
        self._retrieved.fill_(-1)
        self.last_action = torch.zeros(self.action_dim)

    @torch.no_grad()
    def prompt_frames(self) -> torch.Tensor:
        return torch.stack([self.decode(latent[None]) for latent in self._prompt_latents])

    @torch.no_grad()
    def step(self, action: torch.Tensor) -> StepResult:
        """One tick: action (25,) -> uint8 RGB frame (H, W, 3) on the device."""
        self.last_action = action
        action = action.to(self.device, torch.float32)
        number = self._frames
        with self.timer.stage("pose"):
            pose = self.integrator.step(action)
        with self.timer.stage("memory"):
            inputs = self._context(pose, number)
        with self.timer.stage("sample"):
            latents = self.sampler.sample(self._latents, dataset_action(action)[None], *inputs)
        with self.timer.stage("decode"):
            frame = self.decode(latents)
        with self.timer.stage("store"):
            self.bank.insert(latents[0], pose, action, number)
        self._frames = number + 1
        return self.result(frame)

    def _context(self, pose: torch.Tensor, number: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Fill the model's frame buffers for target frame `number`; returns (plucker, timestamps, nframes)."""
        candidates = self.bank.candidates()
        count = len(candidates)
        k = self.num_context
        result = retrieve(pose, self.bank.poses[candidates], self.points,
                          num_prev_frames=min(int(self.memory["num_prev_frames"]), count),
                          min_overlap=float(self.memory["min_overlap"]), k=k,
                          backend=str(self.memory["retrieval_backend"]))
        # As the dataloader: keep the first min(selected, candidates) picks, newest frame first.
        picked = result.slots[:k].clamp(max=count - 1)
        valid = torch.arange(k, device=self.device) < torch.clamp(result.num_selected, max=count)
        slots = candidates[picked]
        numbers = torch.where(valid, self.bank.frame_index[slots], -1)
        numbers, order = torch.sort(numbers, descending=True)
        slots, valid = slots[order], valid[order]
        self._retrieved.copy_(numbers)
        self._latents[0, 1:] = self.bank.latents[slots] * valid[:, None, None]
        self._poses[0, 0] = pose
        self._poses[0, 1:] = self.bank.poses[slots]
        nframes = (1 + valid.sum()).reshape(1)
        frame_numbers = torch.cat([numbers.new_full((1,), number), numbers])[None]
        return self.model.plucker(self._poses, nframes), frame_timestamps(frame_numbers, nframes), nframes

    def tick_extras(self) -> dict[str, torch.Tensor]:
        """Per-frame arrays for recordings: `retrieved_frames` (previous + memory frames the last tick
        conditioned on, newest first, −1 = padding; all −1 for prompt frames)."""
        return {"retrieved_frames": self._retrieved}

    def hud_items(self) -> list[str]:
        recalled = [n for n in self._retrieved.tolist() if n >= 0]
        return [f"memory {len(self.bank)}/{self.bank.capacity} frames",
                "recalled " + (", ".join(str(n) for n in recalled) if recalled else "-")]

    def save_memory(self, path: str | Path) -> None:
        """The memory bank, pose, frame count and sampler noise state, so that `load_memory` continues this
        session exactly where it was."""
        self.bank.save(path, extra={"pose": self.integrator.state, "frames": torch.tensor(self._frames),
                                    "noise_state": self.noise.generator.get_state(),
                                    "dropout_noise_state": self.dropout_noise.generator.get_state()})

    def load_memory(self, path: str | Path) -> None:
        extra = self.bank.load(path)
        missing = sorted({"pose", "frames", "noise_state", "dropout_noise_state"} - set(extra))
        if missing:
            raise CheckpointError(f"memory file {path} is not a session's (no {', '.join(missing)})")
        self.integrator.reset(extra["pose"])
        self._frames = int(extra["frames"])
        self.noise.generator.set_state(extra["noise_state"])
        self.dropout_noise.generator.set_state(extra["dropout_noise_state"])
        self._retrieved.fill_(-1)

    def settings_metadata(self) -> dict:
        return {"mar_iters": self.settings.mar_iters, "diffusion_steps": self.settings.diffusion_steps,
                "reference_compat": self.model.reference_compat, "memory": self.memory}


def open_world(cfg: DictConfig, networks: dict, options: SessionOptions) -> WorldMARSession:
    """A WorldMAR session reset to the world's prompt frames (or `options.prompt`)."""
    prompt_path = resolve_prompt_file(cfg, options.prompt, allow_download=options.allow_download)
    model = networks["worldmar"]
    # A model that samples with attention dropout runs only eagerly: auto says so, other names are refused by
    # the backend sampler.
    dropout = "" if model.attention_dropout() is None else (
        f"attention dropout at sampling (networks.worldmar.attn_dropout={model.attn_dropout:g}, reference_compat) "
        "runs eagerly")
    session = WorldMARSession(cfg, model, networks["vae"], steps=options.steps, seed=options.seed,
                              checkpoint_files=options.checkpoint_files,
                              backend=session_backend(cfg, options, model, eager_for_auto=dropout))
    session.warm_up()
    height, width = session.frame_size
    frames = load_prompt_frames(prompt_path, int(cfg.get("prompt", {}).get("frames", 1)), height, width,
                                offset=options.prompt_offset)
    session.reset(frames)
    return session
