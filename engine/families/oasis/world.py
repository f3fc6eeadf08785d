"""The Oasis world session: owns the device-resident state and runs one tick per action.

Tick stages: `sample` (diffusion forcing of the newest latent frame), `decode` (VAE decoder to
uint8 RGB on the device). Latents follow generate.py: encoder posterior mean * latent_scale,
laid out (B, T, C, h, w) with the VAE token grid as (h, w).
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from engine.backends.base import Backend
from engine.core.noise import ResettableNoise, SeededNoise
from engine.core.prompt import load_prompt_frames
from engine.core.session import SessionBase, SessionOptions, StepResult, session_backend
from engine.core.spawn import resolve_prompt_file
from engine.families.oasis.diffusion_forcing import (
    CachedDiffusionForcing,
    DiffusionForcingSettings,
    ReferenceDiffusionForcing,
)
from engine.families.oasis.dit import OasisDiT
from engine.families.oasis.sampler import BackendDiffusionForcing
from engine.families.oasis.schema import OASIS_LATENT_SCALE
from engine.families.oasis.vae import OasisVAE

SAMPLERS = {"cached": CachedDiffusionForcing, "reference": ReferenceDiffusionForcing}
NETWORKS = {"dit": OasisDiT, "vae": OasisVAE}


def sampler_settings(cfg: DictConfig, steps: int | None = None) -> DiffusionForcingSettings:
    """The world's `sampler:` over DiffusionForcingSettings' defaults; the window defaults to the DiT's."""
    s, defaults = cfg.sampler, DiffusionForcingSettings()
    return DiffusionForcingSettings(
        ddim_steps=int(steps or s.get("ddim_steps", defaults.ddim_steps)),
        stabilization_level=int(s.get("stabilization_level", defaults.stabilization_level)),
        noise_abs_max=float(s.get("noise_abs_max", defaults.noise_abs_max)),
        max_noise_level=int(s.get("max_noise_level", defaults.max_noise_level)),
        max_frames=int(s.get("max_frames") or cfg.networks.dit.get("max_frames", defaults.max_frames)))


class OasisSession(SessionBase):
    """One player in an Oasis world. `reset` takes prompt frames, `step` returns the next RGB frame."""

    family = "oasis"

    def __init__(self, cfg: DictConfig, dit: OasisDiT, vae: OasisVAE, *, sampler: str = "cached",
                 steps: int | None = None, seed: int = 0, noise: ResettableNoise | None = None,
                 checkpoint_files: dict[str, Path] | None = None, backend: Backend | None = None) -> None:
        self.settings = sampler_settings(cfg, steps)
        super().__init__(cfg, device=dit.device, dtype=dit.dtype, action_dim=dit.external_cond_dim,
                         frame_size=vae.image_size, steps=self.settings.ddim_steps, seed=seed, sampler=sampler,
                         checkpoint_files=checkpoint_files, backend=backend)
        self.dit, self.vae = dit, vae
        self.latent_scale = float(cfg.get("latent_scale", OASIS_LATENT_SCALE))
        self.noise = noise or SeededNoise(seed, self.device)
        # The cached sampler runs its DiT calls through the backend (see engine/backends/); eager keeps the
        # plain CachedDiffusionForcing, and the reference sampler is always the plain algorithm.
        fast = self.backend.name != "eager"
        if sampler == "cached" and fast:
            self.sampler = BackendDiffusionForcing(dit, self.settings, self.noise, batch=1, backend=self.backend)
        else:
            self.sampler = SAMPLERS[sampler](dit, self.settings, self.noise, batch=1)
        tokens = torch.zeros((1, vae.grid[0] * vae.grid[1], vae.latent_dim), device=self.device, dtype=self.dtype)
        self._decode_tokens = (self.backend.compile_step(vae.decode, (tokens,), "vae_decoder") if fast
                               else vae.decode)
        self._prompt: tuple[torch.Tensor, torch.Tensor | None] | None = None

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames (T, 3, H, W) in [0, 1] -> latents (1, T, C, h, w)."""
        mean, _ = self.vae.encode(frames.to(self.device, self.dtype) * 2 - 1)
        latents = mean.float() * self.latent_scale
        rows, cols = self.vae.grid
        return latents.transpose(1, 2).reshape(1, frames.shape[0], -1, rows, cols)

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent (1, C, h, w) -> uint8 RGB frame (H, W, 3), on the device."""
        tokens = (latent / self.latent_scale).flatten(2).transpose(1, 2)
        image = (self._decode_tokens(tokens.to(self.dtype).contiguous()).float() + 1) / 2
        return (image.clamp(0, 1) * 255).to(torch.uint8)[0].permute(1, 2, 0)

    def warm_up(self) -> None:
        if isinstance(self.sampler, BackendDiffusionForcing):
            self.sampler.warm_up()
        super().warm_up()

    @torch.no_grad()
    def reset(self, prompt_frames: torch.Tensor | None = None, prompt_actions: torch.Tensor | None = None) -> None:
        """Start (or restart, with no arguments) from prompt frames (P, 3, H, W) in [0, 1]."""
        if prompt_frames is not None:
            actions = None if prompt_actions is None else prompt_actions[None].to(self.device)
            self._prompt = (self.encode(prompt_frames), actions)
        if self._prompt is None:
            raise RuntimeError("reset() needs prompt frames the first time")
        self.noise.reset()
        self.sampler.reset(*self._prompt)

    @property
    def prompt_latents(self) -> torch.Tensor:
        return self._prompt[0]

    @torch.no_grad()
    def prompt_frames(self) -> torch.Tensor:
        latents = self.prompt_latents
        return torch.stack([self.decode(latents[:, j]) for j in range(latents.shape[1])])

    @torch.no_grad()
    def step(self, action: torch.Tensor) -> StepResult:
        """One tick: action (A,) -> uint8 RGB frame (H, W, 3) on the device."""
        self.last_action = action
        with self.timer.stage("sample"):
            latent = self.sampler.step(action.to(self.device, torch.float32)[None])
        with self.timer.stage("decode"):
            frame = self.decode(latent)
        return self.result(frame)

    @property
    def frame_index(self) -> int:
        return self.sampler.frame_index

    def settings_metadata(self) -> dict:
        s = self.settings
        return {"ddim_steps": s.ddim_steps, "max_frames": s.max_frames, "stabilization_level": s.stabilization_level,
                "noise_abs_max": s.noise_abs_max}


def open_world(cfg: DictConfig, networks: dict, options: SessionOptions) -> OasisSession:
    """An Oasis session reset to the world's prompt frames (or `options.prompt`)."""
    prompt_path = resolve_prompt_file(cfg, options.prompt, allow_download=options.allow_download)
    dit = networks["dit"]
    session = OasisSession(cfg, dit, networks["vae"], sampler=options.sampler, steps=options.steps,
                           seed=options.seed, checkpoint_files=options.checkpoint_files,
                           backend=session_backend(cfg, options, dit))
    session.warm_up()
    height, width = session.frame_size
    frames = load_prompt_frames(prompt_path, int(cfg.get("prompt", {}).get("frames", 1)), height, width,
                                offset=options.prompt_offset)
    session.reset(frames)
    return session
