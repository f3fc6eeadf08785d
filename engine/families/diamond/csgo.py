"""The CS:GO world: DIAMOND's csgo-branch world model (eloialonso/diamond, `src/envs/world_model_env.py`, `play.py`).

A tick: the next frame is sampled at low resolution (30x56 officially) from the last T frames and actions (the
newest action is the player's input), upsampled bicubically by the upsampling factor, and refined at full
resolution (150x280) by the upsampler, conditioned on the previous full-resolution frame(s). Both samplers are
EDM samplers whose settings come in two named presets, DIAMOND's `fast` (default) and `higher_quality`.

Samplers (`--sampler`): `cached` runs `PlayDenoiser` (the work that repeats every tick done once, see
`engine/families/diamond/play.py`) on preallocated double-length ring buffers (every conditioning window is a
view, nothing is rolled); `reference` is the plain algorithm step for step: `sample_reference`, `torch.cat` and
three `roll`s per tick, as the reference's WorldModelEnv does. The cached tick calls its networks through the
session's backend (`--backend`, see `play_sampler`); the reference tick is always the plain algorithm.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from engine.backends.base import Backend
from engine.core.noise import NoiseSource, ResettableNoise, SeededNoise
from engine.core.ring import Ring
from engine.core.session import EpisodeSettings, SessionBase, SessionOptions, StepResult, session_backend
from engine.core.timing import StageTimer
from engine.errors import ConfigError
from engine.families.diamond.csgo_spawn import (
    SpawnPoint,
    load_spawn_point,
    resolve_spawn_root,
    spawn_point_dirs,
)
from engine.families.diamond.denoiser import Denoiser, DenoiserConfig
from engine.families.diamond.edm import DenoiseFn, EdmSamplerConfig, sample_reference
from engine.families.diamond.play import play_sampler
from engine.families.diamond.unet import InnerModelConfig


def diamond_denoiser(sigma_data: float, sigma_offset_noise: float, inner_model: Mapping[str, Any],
                     noise_previous_obs: bool = False, upsampling_factor: int | None = None) -> Denoiser:
    """A csgo-branch denoiser (an upsampler when `upsampling_factor` is set) from the official `agent.denoiser` /
    `agent.upsampler` mapping (`csgo/config/agent/csgo.yaml`, with `num_actions` in `inner_model`)."""
    known = {f.name for f in fields(InnerModelConfig)} - {"is_upsampler", "noise_cond"}
    unknown = sorted(set(inner_model) - known)
    if unknown:
        raise ConfigError(f"inner_model has unknown keys {unknown}; expected {sorted(known)}")
    inner = {**inner_model, "is_upsampler": upsampling_factor is not None, "noise_cond": True}
    return Denoiser(DenoiserConfig(inner_model=InnerModelConfig.from_dict(inner), sigma_data=float(sigma_data),
                                   sigma_offset_noise=float(sigma_offset_noise),
                                   noise_previous_obs=bool(noise_previous_obs), upsampling_factor=upsampling_factor))


NETWORKS = {"denoiser": diamond_denoiser, "upsampler": diamond_denoiser}


def preset_settings(cfg: DictConfig, steps: int | None = None) -> tuple[str, EdmSamplerConfig, EdmSamplerConfig]:
    """(preset name, next-frame sampler, upsampling sampler) of `sampler.preset`; `steps` overrides the next-frame
    sampler's denoising steps."""
    name = str(cfg.sampler.get("preset", "fast"))
    presets = cfg.sampler.get("presets") or {}
    if name not in presets:
        raise ConfigError(f"world '{cfg.name}': sampler.preset '{name}' is not one of {', '.join(presets) or 'none'}")
    settings = []
    for part in ("next_obs", "upsampling"):
        values = presets[name].get(part)
        if values is None:
            raise ConfigError(f"world '{cfg.name}': sampler.presets.{name} lacks '{part}'")
        values = OmegaConf.to_container(values, resolve=True)
        if part == "next_obs" and steps is not None:
            values["num_steps_denoising"] = int(steps)
        try:
            settings.append(EdmSamplerConfig.from_dict(values))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"world '{cfg.name}': sampler.presets.{name}.{part}: {exc}") from None
    return name, settings[0], settings[1]


def to_unit(frames: torch.Tensor) -> torch.Tensor:
    """uint8 -> [-1, 1] with the reference's op order."""
    return frames.div(255).mul(2).sub(1)


def to_uint8(frame: torch.Tensor) -> torch.Tensor:
    """(3, H, W) in [-1, 1] -> (H, W, 3) uint8, truncating as the reference's display does."""
    return frame.add(1).div(2).mul(255).clamp(0, 255).byte().permute(1, 2, 0).contiguous()


class ReferenceTick:
    """WorldModelEnv.reset/step of the csgo branch, step for step (the speed baseline)."""

    def __init__(self, denoiser: Denoiser, upsampler: Denoiser, next_cfg: EdmSamplerConfig,
                 up_cfg: EdmSamplerConfig, frames: int, timer: StageTimer | None = None) -> None:
        self.denoiser, self.upsampler = denoiser, upsampler
        self.timer = timer or StageTimer(denoiser.device)
        self.next_cfg, self.up_cfg = next_cfg, up_cfg
        self.dtype = denoiser.dtype
        self.skip_next = frames - denoiser.cfg.inner_model.num_steps_conditioning
        self.skip_up = frames - upsampler.cfg.inner_model.num_steps_conditioning
        self.factor = upsampler.cfg.upsampling_factor

    def reset(self, low: torch.Tensor, full: torch.Tensor, act: torch.Tensor) -> None:
        """low (1, SL, 3, h, w), full (1, SL, 3, H, W) in [-1, 1], act (1, SL, A) 0/1."""
        self.obs_buffer, self.full_buffer = low.clone(), full.clone()
        self.act_buffer = act.long()

    def _denoise(self, model: Denoiser) -> DenoiseFn:
        """`model.denoise` on float32 sampler tensors, whatever the model's dtype."""
        def denoise(x, sigma, obs, act, sigma_cond):
            cond = None if sigma_cond is None else sigma_cond.to(self.dtype)
            return model.denoise(x.to(self.dtype), sigma.to(self.dtype), obs.to(self.dtype), act, cond).float()
        return denoise

    def step(self, act: torch.Tensor, noise: NoiseSource) -> tuple[torch.Tensor, torch.Tensor]:
        self.act_buffer[:, -1] = act
        with self.timer.stage("next_frame"):
            next_obs, _ = sample_reference(self._denoise(self.denoiser), self.obs_buffer[:, self.skip_next:],
                                           self.act_buffer[:, self.skip_next:], self.next_cfg, noise)
        with self.timer.stage("upsample"):
            low = F.interpolate(next_obs, scale_factor=self.factor, mode="bicubic").unsqueeze(1)
            next_full, _ = sample_reference(self._denoise(self.upsampler),
                                            torch.cat((self.full_buffer[:, self.skip_up:], low), dim=1), None,
                                            self.up_cfg, noise)
        self.obs_buffer = self.obs_buffer.roll(-1, dims=1)
        self.act_buffer = self.act_buffer.roll(-1, dims=1)
        self.obs_buffer[:, -1] = next_obs
        self.full_buffer = self.full_buffer.roll(-1, dims=1)
        self.full_buffer[:, -1] = next_full
        return next_obs, next_full


class PlayTick:
    """The same tick with `PlayDenoiser`, `EdmSampler` and ring buffers; the upsampler's conditioning frames are
    written into one preallocated tensor."""

    def __init__(self, denoiser: Denoiser, upsampler: Denoiser, next_cfg: EdmSamplerConfig,
                 up_cfg: EdmSamplerConfig, frames: int, low_size: tuple[int, int], num_actions: int,
                 device: torch.device, backend: Backend | None = None, timer: StageTimer | None = None) -> None:
        self.timer = timer or StageTimer(device)
        self.t_next = denoiser.cfg.inner_model.num_steps_conditioning
        self.t_up = upsampler.cfg.inner_model.num_steps_conditioning
        self.factor = upsampler.cfg.upsampling_factor
        h, w = low_size
        self.next_sampler, self.next_denoiser = play_sampler(denoiser, next_cfg, device, backend, "denoiser", (h, w))
        self.up_sampler, self.up_denoiser = play_sampler(upsampler, up_cfg, device, backend, "upsampler",
                                                         (h * self.factor, w * self.factor))
        full = (3, h * self.factor, w * self.factor)
        self.low, self.full = Ring((3, h, w), frames, device), Ring(full, frames, device)
        self.act = Ring((num_actions,), frames, device)
        self.up_cond = torch.zeros((1, self.t_up + 1, *full), device=device)

    def reset(self, low: torch.Tensor, full: torch.Tensor, act: torch.Tensor) -> None:
        self.low.fill(low)
        self.full.fill(full)
        self.act.fill(act)

    def step(self, act: torch.Tensor, noise: NoiseSource) -> tuple[torch.Tensor, torch.Tensor]:
        self.act.set_newest(act)
        prev_act = self.act.window(self.t_next)
        with self.timer.stage("next_frame"):
            self.next_denoiser.begin(prev_act)
            next_obs, _ = self.next_sampler.sample(self.low.window(self.t_next), prev_act, noise)
        with self.timer.stage("upsample"):
            self.up_cond[:, :self.t_up] = self.full.window(self.t_up)
            self.up_cond[:, self.t_up] = F.interpolate(next_obs, scale_factor=self.factor, mode="bicubic")
            self.up_denoiser.begin(None)
            next_full, _ = self.up_sampler.sample(self.up_cond, None, noise)
        for ring, value in ((self.low, next_obs), (self.full, next_full), (self.act, None)):
            ring.advance()
            if value is not None:
                ring.set_newest(value)
        return next_obs, next_full


TICKS = ("cached", "reference")


class CsgoSession(SessionBase):
    """One player in the CS:GO world. `reset` moves to the next spawn point (sorted order, cycling, as the
    reference's play loop does); `step` takes the 51-dim action of the tick."""

    family = "csgo"
    episodic = True

    def __init__(self, cfg: DictConfig, denoiser: Denoiser, upsampler: Denoiser, spawn_dirs: list[Path], *,
                 sampler: str = "cached", steps: int | None = None, seed: int = 0, noise: ResettableNoise | None = None,
                 checkpoint_files: dict[str, Path] | None = None, backend: Backend | None = None) -> None:
        if sampler not in TICKS:
            raise ConfigError(f"world '{cfg.name}': sampler '{sampler}' is not one of {', '.join(TICKS)}")
        self.preset, self.next_cfg, self.up_cfg = preset_settings(cfg, steps)
        inner = denoiser.inner_model.cfg
        self.frames = max(inner.num_steps_conditioning, upsampler.cfg.inner_model.num_steps_conditioning)
        self.factor = int(upsampler.cfg.upsampling_factor)
        height, width = (int(n) for n in cfg.frame_size)
        if height % self.factor or width % self.factor:
            raise ConfigError(f"world '{cfg.name}': frame_size {height}x{width} is not a multiple of the upsampling "
                              f"factor {self.factor}")
        super().__init__(cfg, device=denoiser.device, dtype=denoiser.dtype, action_dim=inner.num_actions,
                         frame_size=(height, width), steps=self.next_cfg.num_steps_denoising, seed=seed,
                         sampler=sampler, checkpoint_files=checkpoint_files, backend=backend, default_fps=15)
        self.noise = noise or SeededNoise(seed, self.device)
        self.low_size = (height // self.factor, width // self.factor)
        self.episode = EpisodeSettings.from_config(cfg)
        self.episode_ticks = 0
        self.spawn_dirs = spawn_dirs
        self._spawn_cursor = -1
        self.spawn: SpawnPoint | None = None
        # The cached tick runs its denoiser calls through the backend; the reference tick is the plain algorithm.
        if sampler == "cached":
            self.tick = PlayTick(denoiser, upsampler, self.next_cfg, self.up_cfg, self.frames, self.low_size,
                                 self.action_dim, self.device, self.backend, self.timer)
        else:
            self.tick = ReferenceTick(denoiser, upsampler, self.next_cfg, self.up_cfg, self.frames, self.timer)
        self._index = 0

    def load_spawn(self, path: Path) -> SpawnPoint:
        return load_spawn_point(path, self.frames, self.low_size, self.factor, self.action_dim)

    @torch.no_grad()
    def reset(self) -> None:
        """Start from the next spawn point (the first one on the first call); the noise stream restarts."""
        self._spawn_cursor = (self._spawn_cursor + 1) % len(self.spawn_dirs)
        self.spawn = self.load_spawn(self.spawn_dirs[self._spawn_cursor])
        self.noise.reset()
        to = dict(device=self.device)
        self.tick.reset(to_unit(self.spawn.low_res.to(**to))[None], to_unit(self.spawn.full_res.to(**to))[None],
                        self.spawn.act.to(**to)[None])
        self.last_action = self.spawn.act[-1]
        self._index = self.frames
        self.episode_ticks = 0

    def prompt_frames(self) -> torch.Tensor:
        """The spawn point's full-resolution frames (SL, H, W, 3) uint8; the last one is on screen at reset."""
        return self.spawn.full_res.permute(0, 2, 3, 1).contiguous().to(self.device)

    @torch.no_grad()
    def step(self, action: torch.Tensor) -> StepResult:
        """One tick: the 51-dim 0/1 action -> uint8 RGB frame (H, W, 3) on the device."""
        if action.device.type == "cpu" and not ((action == 0) | (action == 1)).all():
            raise ConfigError(f"world '{self.world}': actions are multi-hot 0/1 vectors of {self.action_dim} "
                              "entries (engine/actions/csgo.py)")
        self.last_action = action
        _, next_full = self.tick.step(action.to(self.device, torch.float32), self.noise)  # times its stages
        with self.timer.stage("decode"):
            frame = to_uint8(next_full[0])
        self._index += 1
        self.episode_ticks += 1
        return self.result(frame)

    def episode_over(self) -> bool:
        """The horizon reached: the world restarts at the next spawn point (there is no end model)."""
        return self.episode.over(self.episode_ticks, ended=False)

    @property
    def frame_index(self) -> int:
        return self._index

    def hud_items(self) -> list[str]:
        return [f"spawn {self.spawn.name}", f"preset {self.preset}", *self.episode.hud_items(self.episode_ticks)]

    def settings_metadata(self) -> dict:
        return {"preset": self.preset, "spawn": self.spawn.name if self.spawn else None,
                "episode": self.episode.__dict__, "next_obs_sampler": self.next_cfg.__dict__,
                "upsampling_sampler": self.up_cfg.__dict__}


def open_world(cfg: DictConfig, networks: dict, options: SessionOptions) -> CsgoSession:
    """A CS:GO session at the first spawn point of the world's spawn folder (or `options.prompt`)."""
    root = resolve_spawn_root(cfg, options.prompt, allow_download=options.allow_download)
    denoiser = networks["denoiser"]
    session = CsgoSession(cfg, denoiser, networks["upsampler"], spawn_point_dirs(root), sampler=options.sampler,
                          steps=options.steps, seed=options.seed, checkpoint_files=options.checkpoint_files,
                          backend=session_backend(cfg, options, denoiser))
    session.warm_up()
    session.reset()
    return session
