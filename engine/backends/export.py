"""ONNX export of the Oasis networks in their play configuration, checked in onnxruntime.

Every wrapper has static shapes and a plain-tensor signature, as TensorRT wants them, and wraps the
very units the `compile` backend runs (`engine/backends/oasis_units.py`), so an engine replaces a unit
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

import contextlib
import io
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from engine.backends.oasis_units import OasisUnits, pack_modulations
from engine.errors import EngineError
from engine.models.oasis_dit import OasisDiT
from engine.models.oasis_vae import OasisVAE

# Models whose weights exceed this are written with external data (the protobuf limit is 2 GiB).
EXTERNAL_DATA_BYTES = 1 << 30


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


@dataclass
class ExportSpec:
    """One network to export: the wrapper, example inputs of the play shapes, and I/O names."""

    name: str
    role: str
    module: nn.Module
    inputs: tuple[torch.Tensor, ...]
    input_names: list[str]
    output_names: list[str]


def oasis_exports(dit: OasisDiT, vae: OasisVAE, batch: int = 1, seed: int = 0,
                  context_level: int = 14, step_level: int = 500) -> list[ExportSpec]:
    """The Oasis units with example inputs drawn from `seed` (the cache from a real prefill)."""
    gen = torch.Generator().manual_seed(seed)
    param = dit.x_embedder.proj.weight
    device, dtype = param.device, param.dtype
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
    vae_dtype = vae.predictor.weight.dtype
    images = (torch.rand((batch, 3, image_h, image_w), generator=gen) * 2 - 1).to(device, vae_dtype)
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
    param = vae.predictor.weight
    latents = torch.randn((batch, vae.grid[0] * vae.grid[1], vae.latent_dim), generator=gen)
    return ExportSpec("vae_decoder", "vae", VAEDecoder(vae), (latents.to(param.device, param.dtype),), ["latents"],
                      ["images"])


def _weight_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def export_onnx(module: nn.Module, inputs: tuple[torch.Tensor, ...], path: Path, input_names: Sequence[str],
                output_names: Sequence[str]) -> str:
    """Write `module` as ONNX; returns the exporter used: 'dynamo' or 'torchscript' (the fallback)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    external = _weight_bytes(module) > EXTERNAL_DATA_BYTES
    common = {"input_names": list(input_names), "output_names": list(output_names), "verbose": False}
    module = module.eval()
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch-internal deprecations, not ours to fix
            torch.onnx.export(module, inputs, str(path), dynamo=True, external_data=external, **common)
        return "dynamo"
    except Exception as exc:  # the dynamo path can fail on any unsupported op; the fallback decides
        dynamo_error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    finally:
        quiet.setLevel(level)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # Its deprecation notice and tracer warnings say nothing check_onnx does not test.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(module, inputs, str(path), dynamo=False, do_constant_folding=True, **common)
    except Exception as exc:
        raise EngineError(f"ONNX export of {path.stem} failed: torch.export path: {dynamo_error}; "
                          f"TorchScript path: {type(exc).__name__}: {exc}") from None
    tqdm.write(f"{path.stem}: torch.export path failed ({dynamo_error}), used the TorchScript exporter")
    return "torchscript"


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def onnx_session(model_path: Path) -> Any:
    """An onnxruntime InferenceSession of an ONNX file on the CPU, warnings silenced."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


def run_onnx(model_path: Path, inputs: Sequence[torch.Tensor]) -> list[np.ndarray]:
    """Run an ONNX file in onnxruntime on the CPU, inputs bound by position."""
    session = onnx_session(model_path)
    feeds = {arg.name: _numpy(tensor) for arg, tensor in zip(session.get_inputs(), inputs, strict=True)}
    return session.run(None, feeds)


def check_onnx(model_path: str | Path, torch_module: nn.Module, inputs: Sequence[torch.Tensor],
               atol: float) -> float:
    """Max abs difference between onnxruntime (CPU) and PyTorch over all outputs; EngineError above `atol`."""
    with torch.no_grad():
        expected = torch_module(*inputs)
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = run_onnx(Path(model_path), inputs)
    if len(got) != len(expected):
        raise EngineError(f"ONNX model {model_path} has {len(got)} outputs, PyTorch gives {len(expected)}")
    diff = 0.0
    for out, ref in zip(got, expected, strict=True):
        if out.shape != tuple(ref.shape):
            raise EngineError(f"ONNX model {model_path}: output shape {out.shape} != PyTorch {tuple(ref.shape)}")
        diff = max(diff, float(np.abs(out.astype(np.float64) - _numpy(ref.float()).astype(np.float64)).max()))
    if not diff <= atol:
        raise EngineError(f"ONNX model {model_path} differs from PyTorch by {diff:.3g} (tolerance {atol:g})")
    return diff


def export_all(specs: Sequence[ExportSpec], folder: Path, atol: float) -> dict[str, dict]:
    """Export and check every spec into `folder/<name>.onnx`; per name: path, exporter, max abs diff."""
    results = {}
    for spec in tqdm(specs, desc="export ONNX", unit="net"):
        path = folder / f"{spec.name}.onnx"
        exporter = export_onnx(spec.module, spec.inputs, path, spec.input_names, spec.output_names)
        diff = check_onnx(path, spec.module, spec.inputs, atol)
        results[spec.name] = {"path": path, "exporter": exporter, "max_abs_diff": diff}
    return results
