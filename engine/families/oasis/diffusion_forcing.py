"""Diffusion-forcing DDIM sampling of Oasis (etched-ai/open-oasis `generate.py`).

One tick generates one frame: the newest frame starts from clamped Gaussian noise and is
denoised with `ddim_steps` DDIM steps (v-prediction) while the context frames of the sliding
window (at most `max_frames - 1` of them) are fed clean and labelled with noise level
`stabilization_level - 1`.

`ReferenceDiffusionForcing` mirrors the reference loop step for step (the whole window through
the network at every step) and is the in-project oracle. `CachedDiffusionForcing` computes the
same frames with far less work: context frames' temporal keys/values are computed once per tick
(once per frame while the window is still filling) and each denoising step runs only the newest
frame's tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.core.noise import NoiseSource
from engine.families.oasis.dit import OasisDiT
from engine.families.oasis.schedules import alphas_cumprod, ddim_noise_levels


@dataclass(frozen=True)
class DiffusionForcingSettings:
    ddim_steps: int = 10
    stabilization_level: int = 15
    noise_abs_max: float = 20.0
    max_noise_level: int = 1000
    max_frames: int = 32

    @property
    def context_level(self) -> int:
        return self.stabilization_level - 1


class _SlidingWindow:
    """Window bookkeeping shared by both samplers: preallocated latent/action buffers.

    Positions 0 .. n-1 of the buffers hold the context frames; position n receives the frame
    being generated. When the window is full the oldest context frame is dropped after a tick.
    """

    def __init__(self, model: OasisDiT, settings: DiffusionForcingSettings, noise: NoiseSource,
                 batch: int = 1) -> None:
        self.model = model
        self.settings = settings
        self.noise = noise
        self.batch = batch
        self.device, self.model_dtype = model.device, model.dtype
        self.levels = ddim_noise_levels(settings.ddim_steps, settings.max_noise_level)
        self.abar = alphas_cumprod(settings.max_noise_level).to(self.device)
        height, width = (g * model.patch_size for g in model.grid)
        self.frame_shape = (model.in_channels, height, width)
        window = settings.max_frames
        self.latents = torch.zeros((batch, window, *self.frame_shape), device=self.device)
        self.actions = torch.zeros((batch, window, model.external_cond_dim), device=self.device)
        self.context = 0
        self.frame_index = 0

    def reset(self, prompt_latents: torch.Tensor, prompt_actions: torch.Tensor | None = None) -> None:
        """Start from prompt latents (B, P, C, H, W); prompt actions (B, P, A) default to zeros."""
        keep = min(prompt_latents.shape[1], self.settings.max_frames - 1)
        self.latents.zero_()
        self.actions.zero_()
        self.latents[:, :keep] = prompt_latents[:, -keep:].to(self.latents)
        if prompt_actions is not None:
            self.actions[:, :keep] = prompt_actions[:, -keep:].to(self.actions)
        self.context = keep
        self.frame_index = prompt_latents.shape[1]
        self._on_reset()

    def step(self, action: torch.Tensor) -> torch.Tensor:
        """Generate the next frame conditioned on `action` (B, A); returns its latent (B, C, H, W)."""
        n = self.context
        self.actions[:, n] = action.to(self.actions)
        bound = self.settings.noise_abs_max
        self.latents[:, n] = self.noise.draw((self.batch, *self.frame_shape), self.device).clamp(-bound, bound)
        self._denoise_newest()
        frame = self.latents[:, n].clone()
        self._advance()
        return frame

    def _advance(self) -> None:
        self.frame_index += 1
        if self.context < self.settings.max_frames - 1:
            self.context += 1
            return
        self.latents[:, :-1] = self.latents[:, 1:].clone()
        self.actions[:, :-1] = self.actions[:, 1:].clone()
        self._on_slide()

    def _level_tensor(self, level: int, frames: int) -> torch.Tensor:
        return torch.full((self.batch, frames), level, dtype=torch.long, device=self.device)

    def _on_reset(self) -> None:
        """Hook for subclasses that keep state derived from the window."""

    def _on_slide(self) -> None:
        """Hook for subclasses that keep state derived from the window."""

    def _denoise_newest(self) -> None:
        raise NotImplementedError


class ReferenceDiffusionForcing(_SlidingWindow):
    """The reference algorithm: every DDIM step runs the whole window, all frames' updates computed."""

    def _denoise_newest(self) -> None:
        n, ctx_level, abar = self.context, self.settings.context_level, self.abar
        xw = self.latents[:, : n + 1]
        aw = self.actions[:, : n + 1]
        for k in range(self.settings.ddim_steps, 0, -1):
            t_new = self.levels[k]
            t_next = self.levels[k - 1] if self.levels[k - 1] >= 0 else t_new
            tw = torch.cat((self._level_tensor(ctx_level, n), self._level_tensor(t_new, 1)), dim=1)
            tnw = torch.cat((self._level_tensor(ctx_level, n), self._level_tensor(t_next, 1)), dim=1)
            v = self.model(xw.to(self.model_dtype), tw, aw.to(self.model_dtype)).float()
            a = abar[tw][..., None, None, None]
            x0 = a.sqrt() * xw - (1 - a).sqrt() * v
            eps = ((1 / a).sqrt() * xw - x0) / (1 / a - 1).sqrt()
            a_next = abar[tnw][..., None, None, None].clone()
            a_next[:, :-1] = 1.0
            if k == 1:
                a_next[:, -1] = 1.0
            x_pred = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
            xw[:, -1] = x_pred[:, -1]


class CachedDiffusionForcing(_SlidingWindow):
    """Same frames as the reference; context keys/values are computed once and reused.

    The adaLN modulations of all denoising steps of a tick (they depend only on the step's noise
    level and the tick's action) are computed in one batch before the steps. Per tick the cost is
    `ddim_steps` single-frame passes plus one pass per context frame whose
    keys/values are stale: one frame while the window fills, the whole context after it slides
    (dropping the oldest frame changes what every later frame attended to).
    """

    def __init__(self, model: OasisDiT, settings: DiffusionForcingSettings, noise: NoiseSource,
                 batch: int = 1) -> None:
        super().__init__(model, settings, noise, batch)
        self.cache = model.new_cache(batch, settings.max_frames)
        self.step_levels = torch.tensor([self.levels[1:]] * batch, dtype=torch.long, device=self.device)
        self.context_levels = self._level_tensor(settings.context_level, settings.max_frames)
        self.coefficients = self._ddim_coefficients()

    def _ddim_coefficients(self) -> list[tuple[torch.Tensor, ...]]:
        """Per step k: sqrt(a), sqrt(1-a), sqrt(1/a), sqrt(1/a - 1), sqrt(a_next), sqrt(1-a_next) as float32."""
        coefficients = [()]
        one = torch.ones((), device=self.device)
        for k in range(1, self.settings.ddim_steps + 1):
            a = self.abar[self.levels[k]]
            a_next = one if k == 1 else self.abar[self.levels[k - 1]]
            coefficients.append((a.sqrt(), (1 - a).sqrt(), (1 / a).sqrt(), (1 / a - 1).sqrt(),
                                 a_next.sqrt(), (1 - a_next).sqrt()))
        return coefficients

    def _on_reset(self) -> None:
        self.cache.length = 0

    def _on_slide(self) -> None:
        self.cache.length = 0

    def _fill_cache(self) -> None:
        start, n = self.cache.length, self.context
        if start < n:
            self.model.forward_cached(
                self.latents[:, start:n].to(self.model_dtype), self.context_levels[:, start:n],
                self.actions[:, start:n].to(self.model_dtype), self.cache, start, keys_only=True)
            self.cache.length = n

    def _denoise_newest(self) -> None:
        self._fill_cache()
        n, steps = self.context, self.settings.ddim_steps
        x = self.latents[:, n : n + 1]
        action = self.actions[:, n : n + 1].to(self.model_dtype).expand(-1, steps, -1)
        step_mods = self.model.modulations(self.step_levels, action)
        for k in range(steps, 0, -1):
            v = self.model.forward_modulated(x.to(self.model_dtype), step_mods.frames(k - 1), self.cache, n).float()
            x.copy_(ddim_update(x, v, self.coefficients[k]))


def ddim_update(x: torch.Tensor, v: torch.Tensor, coefficients: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """One DDIM step of a v-prediction, with one step's `CachedDiffusionForcing._ddim_coefficients`."""
    sqrt_a, sqrt_1ma, sqrt_inv_a, sqrt_inv_am1, sqrt_a_next, sqrt_1ma_next = coefficients
    x0 = sqrt_a * x - sqrt_1ma * v
    eps = (sqrt_inv_a * x - x0) / sqrt_inv_am1
    return sqrt_a_next * x0 + sqrt_1ma_next * eps


def generate(sampler: _SlidingWindow, prompt_latents: torch.Tensor, actions: torch.Tensor,
             total_frames: int) -> torch.Tensor:
    """Offline generation as generate.py does it: actions (B, >= total_frames, A), actions[:, j] for frame j.

    Returns (B, total_frames, C, H, W) with the prompt frames unchanged.
    """
    prompt_frames = prompt_latents.shape[1]
    sampler.reset(prompt_latents, actions[:, :prompt_frames])
    frames = [prompt_latents.float()]
    for i in range(prompt_frames, total_frames):
        frames.append(sampler.step(actions[:, i])[:, None])
    return torch.cat(frames, dim=1)
