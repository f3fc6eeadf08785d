"""The cached diffusion-forcing sampler with its network calls run through a backend.

Same frames as `CachedDiffusionForcing` (up to float rounding of the masked attention), but every
network call has static shapes (see `oasis_units`), so a backend can compile it, capture the whole
tick's denoising loop as one CUDA graph, or run TensorRT engines built from the same units:

- `dit_prefill`: the S = capacity - 1 context frames after the window slides (one call per tick);
- `dit_append`: one context frame while the window fills after a reset;
- `dit_step`: a denoising step of the newest frame; `dit_tick` is the loop of `ddim_steps` of them
  with the DDIM updates between, captured whole.
"""

from __future__ import annotations

import torch

from engine.backends.base import Backend
from engine.core.noise import NoiseSource
from engine.families.oasis.diffusion_forcing import (
    CachedDiffusionForcing,
    DiffusionForcingSettings,
    ddim_update,
)
from engine.families.oasis.dit import OasisDiT
from engine.families.oasis.units import OasisUnits, pack_modulations


class BackendDiffusionForcing(CachedDiffusionForcing):
    """`CachedDiffusionForcing` whose context fill and denoising loop are static-shape backend calls."""

    def __init__(self, model: OasisDiT, settings: DiffusionForcingSettings, noise: NoiseSource,
                 batch: int = 1, backend: Backend | None = None) -> None:
        super().__init__(model, settings, noise, batch)
        self.backend = backend = backend or Backend(self.device, self.model_dtype)
        window = settings.max_frames
        context = window - 1
        if backend.replaces_units:
            units = OasisUnits(model, window)
            self._step = backend.compile(units.step, "dit_step")
            self._prefill = backend.compile(units.prefill, "dit_prefill")
            self._append = backend.compile(units.context, "dit_append")
        else:
            units = OasisUnits(model, window, compile=backend.compile)
            self._step = self._prefill = self._append = None
        self.units = units
        self.position = torch.zeros(1, dtype=torch.long, device=self.device)
        self.positions = torch.arange(window, device=self.device)
        keys, values = self.cache.keys, self.cache.values
        frame = torch.zeros((batch, 1, *self.frame_shape), device=self.device)
        action = torch.zeros((batch, 1, model.external_cond_dim), device=self.device)
        self._tick = backend.capture(self._denoise, (frame, action, keys, values, self.position), "dit_tick",
                                     buffers=(2, 3))
        context_x = torch.zeros((batch, context, *self.frame_shape), device=self.device)
        context_a = torch.zeros((batch, context, model.external_cond_dim), device=self.device)
        self._refill = backend.capture(self._write_context, (context_x, context_a, keys, values, self.positions[:context]),
                                       "dit_prefill", buffers=(2, 3))
        self._fill_one = backend.capture(self._write_context, (frame, action, keys, values, self.position),
                                         "dit_append", buffers=(2, 3))

    def warm_up(self) -> None:
        """Compile/capture every call now (progress bar); the warm-up runs leave the cache to be refilled."""
        self.backend.warm_up()
        self.cache.length = 0

    def _write_context(self, x: torch.Tensor, action: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                       positions: torch.Tensor) -> None:
        dt, frames = self.model_dtype, x.shape[1]
        levels = self.context_levels[:, :frames]
        x, action = x.to(dt).contiguous(), action.to(dt).contiguous()
        if self._append is None:  # eager or compiled units: written in place
            self.units.write_context(x, levels, action, keys, values, positions)
            return
        if frames > 1:
            new_keys, new_values = self._prefill(x, levels, action)
        else:
            new_keys, new_values = self._append(x, levels, action, keys, values, positions)
        keys.index_copy_(3, positions, new_keys)
        values.index_copy_(3, positions, new_values)

    def _denoise(self, x: torch.Tensor, action: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                 position: torch.Tensor) -> torch.Tensor:
        """All DDIM steps of the newest frame x (B, 1, C, H, W) from noise to the clean latent."""
        steps, dt = self.settings.ddim_steps, self.model_dtype
        step = self.units.step if self._step is None else self._step
        mods = pack_modulations(self.model.modulations(self.step_levels, action.to(dt).expand(-1, steps, -1)))
        for k in range(steps, 0, -1):
            v = step(x.to(dt).contiguous(), mods[:, k - 1 : k], keys, values, position).float()
            x = ddim_update(x, v, self.coefficients[k])
        return x

    def _fill_cache(self) -> None:
        start, n = self.cache.length, self.context
        keys, values = self.cache.keys, self.cache.values
        if start == 0 and n == self.settings.max_frames - 1:
            self._refill(self.latents[:, :n], self.actions[:, :n], keys, values, self.positions[:n])
        else:
            for p in range(start, n):
                self.position.copy_(self.positions[p])
                self._fill_one(self.latents[:, p : p + 1], self.actions[:, p : p + 1], keys, values, self.position)
        self.cache.length = n

    def _denoise_newest(self) -> None:
        self._fill_cache()
        n = self.context
        self.position.copy_(self.positions[n])
        x = self.latents[:, n : n + 1]
        x.copy_(self._tick(x, self.actions[:, n : n + 1], self.cache.keys, self.cache.values, self.position))
