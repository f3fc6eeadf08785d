"""The Oasis networks in their play configuration, as ONNX export specs (checked in onnxruntime by
`engine.backends.export`).

Every wrapper has static shapes and a plain-tensor signature, as TensorRT wants them, and wraps the
very units the `compile` backend runs (`engine/families/oasis/units.py`), so an engine replaces a unit
one for one in `BackendDiffusionForcing`:

- `DiTPrefill`: the `max_frames - 1` context frames -> every layer's temporal keys/values.
- `DiTAppend`: one context frame at a window position (an input) -> its keys/values.
- `DiTStep`: one denoising step of the newest frame at a window position, its adaLN modulations
  packed into one input, against the full-capacity key/value cache.
- `VAEDecoder`: latent tokens -> image; `VAEEncoder`: image -> posterior mean.

The cache inputs are copied inside `DiTAppend`/`DiTStep` before the units write their frame's slot,
so the graphs have no input mutation.

Exporter: `torch.onnx.export(..., dynamo=True)` (torch.export + onnxscript) is used first; it
handles the in-place cache writes of `forward_cached` (they are functionalised) and is the path
that exported all four networks on torch 2.13 (onnxruntime parity ~1e-6 at fixture size). When
it raises, `export_onnx` falls back to the TorchScript exporter (`dynamo=False`) and reports
which one produced the file. That fallback is only good for the VAE on torch 2.13: for the DiT
prefill it loses the cache writes (a graph without inputs, which `check_onnx` rejects) and for
the DiT step it crashed the process, so the DiT needs the torch.export path.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from omegaconf import DictConfig
from torch import nn

from engine.backends.export import ExportSpec
from engine.families.oasis.dit import OasisDiT
from engine.families.oasis.units import OasisUnits, pack_modulations
from engine.families.oasis.vae import OasisVAE


class DiTStep(nn.Module):
    """`OasisUnits.step` on a copy of the cache: (x, mods, keys, values, position) -> v-prediction."""

    def __init__(self, units: OasisUnits) -> None:
        super().__init__()
        self.units = units

    def forward(self, x: torch.Tensor, mods: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                position: torch.Tensor) -> torch.Tensor:
        return self.units.step(x, mods, keys.clone(), values.clone(), position)


class DiTAppend(nn.Module):
    """`OasisUnits.context` for one frame on a copy of the cache -> that frame's keys, values."""

    def __init__(self, units: OasisUnits) -> None:
        super().__init__()
        self.units = units

    def forward(self, x: torch.Tensor, t: torch.Tensor, action: torch.Tensor, keys: torch.Tensor,
                values: torch.Tensor, position: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.units.context(x, t, action, keys.clone(), values.clone(), position)


class DiTPrefill(nn.Module):
    """`OasisUnits.prefill`: context frames (B, S, C, H, W) at 0 .. S-1 -> keys, values (depth, B*h*w, heads, S, hd)."""

    def __init__(self, units: OasisUnits) -> None:
        super().__init__()
        self.units = units

    def forward(self, x: torch.Tensor, t: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.units.prefill(x, t, action)


class VAEDecoder(nn.Module):
    """Latent tokens (B, N, latent_dim) -> images (B, 3, H, W) in [-1, 1]."""

    def __init__(self, vae: OasisVAE) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents)


class VAEEncoder(nn.Module):
    """Images (B, 3, H, W) in [-1, 1] -> posterior mean (B, N, latent_dim)."""

    def __init__(self, vae: OasisVAE) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(images)[0]


def oasis_exports(dit: OasisDiT, vae: OasisVAE, batch: int = 1, seed: int = 0,
                  context_level: int = 14, step_level: int = 500) -> list[ExportSpec]:
    """The Oasis units with example inputs drawn from `seed` (the cache from a real prefill)."""
    gen = torch.Generator().manual_seed(seed)
    device, dtype = dit.device, dit.dtype
    units = OasisUnits(dit, dit.max_frames)
    context = dit.max_frames - 1
    height, width = (g * dit.patch_size for g in dit.grid)
    frame = (dit.in_channels, height, width)

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=gen).to(device, dtype)

    def levels(level: int, frames: int) -> torch.Tensor:
        return torch.full((batch, frames), level, dtype=torch.long, device=device)

    prefill_inputs = (normal(batch, context, *frame), levels(context_level, context),
                      normal(batch, context, dit.external_cond_dim))
    cache = dit.new_cache(batch)
    keys, values = cache.keys, cache.values
    with torch.no_grad():
        prompt_keys, prompt_values = units.prefill(*prefill_inputs)
    keys[:, :, :, :context], values[:, :, :, :context] = prompt_keys, prompt_values
    last = torch.tensor([context], device=device)
    append_inputs = (normal(batch, 1, *frame), levels(context_level, 1), normal(batch, 1, dit.external_cond_dim),
                     keys, values, last - 1)
    with torch.no_grad():
        mods = pack_modulations(dit.modulations(levels(step_level, 1), normal(batch, 1, dit.external_cond_dim)))
    step_inputs = (normal(batch, 1, *frame), mods, keys, values, last)
    image_h, image_w = vae.image_size
    images = (torch.rand((batch, 3, image_h, image_w), generator=gen) * 2 - 1).to(device, vae.dtype)
    return [
        ExportSpec("dit_prefill", "dit", DiTPrefill(units), prefill_inputs, ["x", "t", "action"], ["keys", "values"]),
        ExportSpec("dit_append", "dit", DiTAppend(units), append_inputs,
                   ["x", "t", "action", "keys", "values", "position"], ["new_keys", "new_values"]),
        ExportSpec("dit_step", "dit", DiTStep(units), step_inputs, ["x", "mods", "keys", "values", "position"],
                   ["v"]),
        vae_decoder_spec(vae, gen, batch),
        ExportSpec("vae_encoder", "vae", VAEEncoder(vae), (images,), ["images"], ["mean"]),
    ]


def vae_decoder_spec(vae: OasisVAE, gen: torch.Generator, batch: int = 1) -> ExportSpec:
    """The VAE decoder on one frame's latent tokens (`vae_decoder`, as the Oasis and WorldMAR ticks decode)."""
    latents = torch.randn((batch, vae.grid[0] * vae.grid[1], vae.latent_dim), generator=gen)
    return ExportSpec("vae_decoder", "vae", VAEDecoder(vae), (latents.to(vae.device, vae.dtype),), ["latents"],
                      ["images"])


def world_exports(cfg: DictConfig, networks: Mapping[str, nn.Module]) -> list[ExportSpec]:
    """What build_trt.py exports of an Oasis world: the DiT units and the VAE, in the play configuration."""
    return oasis_exports(networks["dit"], networks["vae"])
