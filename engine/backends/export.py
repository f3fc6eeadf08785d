"""ONNX export of a world's static-shape network calls, checked in onnxruntime.

Each family lists its exports as `ExportSpec`s (a wrapper with a plain-tensor signature, as TensorRT wants
it, example inputs of the play shapes, and I/O names); `export_all` writes and checks them.

Exporter: `torch.onnx.export(..., dynamo=True)` (torch.export + onnxscript) is used first; it
handles in-place cache writes (they are functionalised) and is the path that exported every network on
torch 2.13. When it raises, `export_onnx` falls back to the TorchScript exporter (`dynamo=False`) and
reports which one produced the file (see `engine/families/oasis/exports.py` for where that fallback is
and is not good enough).
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

from engine.errors import EngineError

# Models whose weights exceed this are written with external data (the protobuf limit is 2 GiB).
EXTERNAL_DATA_BYTES = 1 << 30


@dataclass
class ExportSpec:
    """One network to export: the wrapper, example inputs of the play shapes, and I/O names."""

    name: str
    role: str
    module: nn.Module
    inputs: tuple[torch.Tensor, ...]
    input_names: list[str]
    output_names: list[str]


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
