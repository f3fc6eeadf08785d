"""`--backend trt`: a world's exported units replaced by the TensorRT engines `build_trt.py` wrote.

At load every engine's sidecar is checked against this run (checkpoint sha256, precision, GPU,
TensorRT version); a stale or missing engine is refused with a one-line reason and the command that
rebuilds it. Engines are called with torch tensors on the current CUDA stream (`execute_async_v3`).

NOT RUN HERE: TensorRT cannot be installed on any machine available to this project, so the engine
calls are written against TensorRT 10's documented Python API (`Runtime.deserialize_cuda_engine`,
`num_io_tensors`, `get_tensor_name/mode/shape/dtype`, `set_tensor_address`, `execute_async_v3`) and
have never run; the refusal paths and the sidecar checks are tested.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from engine.backends.base import Backend, Fn
from engine.backends.device import dtype_name
from engine.backends.tensorrt import (
    INSTALL_HINT,
    check_sidecar,
    import_tensorrt,
    read_sidecar,
    tensorrt_environment,
)
from engine.errors import EngineError


def engines_folder(root: Path, world: str) -> Path:
    return Path(root) / world


def engine_problem(folder: Path, name: str, checkpoint_sha256: Mapping[str, str], precision: str,
                   environment: Mapping[str, object]) -> str | None:
    """Why the engine `name` in `folder` does not fit this run (checkpoints, precision, GPU, TensorRT
    version from `environment`), or None when it does."""
    sidecar = read_sidecar(folder / f"{name}.json")
    if sidecar is None:
        return f"no engine {name} in {folder}"
    current = {"checkpoint_sha256": checkpoint_sha256.get(str(sidecar.get("role")), "unknown"),
               "precision": precision, **environment}
    reason = check_sidecar(sidecar, current)
    if reason is None and not (folder / str(sidecar["plan"])).is_file():
        reason = f"the engine file {sidecar['plan']} is missing"
    return reason


def refusal(world: str, name: str, reason: str, precision: str) -> str:
    """The one-line refusal of a stale engine, with the command that rebuilds it."""
    return (f"--backend trt: engine {name} for world {world} cannot be used: {reason}; "
            f"rebuild with: python build_trt.py --world {world} --precision {precision}")


class TrtCall:
    """One engine bound to torch tensors: inputs by position, outputs allocated per call."""

    def __init__(self, trt: Any, engine: Any, name: str, device: torch.device, dtype: torch.dtype) -> None:
        torch_dtypes = {trt.float32: torch.float32, trt.float16: torch.float16, trt.bfloat16: torch.bfloat16,
                        trt.int32: torch.int32, trt.int64: torch.int64, trt.bool: torch.bool, trt.int8: torch.int8}
        self.name, self.device, self.dtype = name, device, dtype
        self.engine = engine
        self.context = engine.create_execution_context()
        self.inputs, self.outputs = [], []
        for i in range(engine.num_io_tensors):
            tensor = engine.get_tensor_name(i)
            spec = (tensor, torch_dtypes[engine.get_tensor_dtype(tensor)], tuple(engine.get_tensor_shape(tensor)))
            is_input = engine.get_tensor_mode(tensor) == trt.TensorIOMode.INPUT
            (self.inputs if is_input else self.outputs).append(spec)

    def __call__(self, *args: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if len(args) != len(self.inputs):
            raise EngineError(f"TensorRT engine {self.name} takes {len(self.inputs)} inputs, got {len(args)}")
        bound = []
        for (tensor, dtype, shape), arg in zip(self.inputs, args, strict=True):
            value = arg.to(self.device, dtype).contiguous()
            if tuple(value.shape) != shape:
                raise EngineError(f"TensorRT engine {self.name}: input {tensor} has shape {tuple(value.shape)}, "
                                  f"the engine was built for {shape}")
            self.context.set_tensor_address(tensor, value.data_ptr())
            bound.append(value)
        outputs = []
        for tensor, dtype, shape in self.outputs:
            out = torch.empty(shape, dtype=dtype, device=self.device)
            self.context.set_tensor_address(tensor, out.data_ptr())
            outputs.append(out)
        if not self.context.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream):
            raise EngineError(f"TensorRT engine {self.name} failed to run (see the log above)")
        outputs = [o.to(self.dtype) if o.is_floating_point() else o for o in outputs]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


class TrtBackend(Backend):
    """Runs the world's exported units as TensorRT engines from `engines/<world>/`."""

    name = "trt"
    replaces_units = True

    def __init__(self, device: torch.device, dtype: torch.dtype, world: str, folder: Path,
                 checkpoint_files: Mapping[str, Path], reason: str = "") -> None:
        super().__init__(device, dtype, reason)
        if device.type != "cuda":
            raise EngineError(f"--backend trt runs on a CUDA GPU, not on {device} (use --device cuda; TensorRT: "
                              f"{INSTALL_HINT})")
        self.trt = import_tensorrt()
        self.world = world
        self.folder = Path(folder)
        self.checkpoint_files = dict(checkpoint_files)
        self.environment = tensorrt_environment()
        self.runtime = self.trt.Runtime(self.trt.Logger(self.trt.Logger.WARNING))

    @functools.cached_property
    def checkpoint_sha256(self) -> dict[str, str]:
        """sha256 per role of this run's checkpoints (hashed once, only when an engine is checked)."""
        from engine.checkpoints.verify import files_sha256

        return files_sha256(self.checkpoint_files)

    def stale_reason(self, name: str) -> str | None:
        """Why engine `name` cannot be used in this run, or None when it can."""
        return engine_problem(self.folder, name, self.checkpoint_sha256, dtype_name(self.dtype), self.environment)

    def first_problem(self) -> str | None:
        """Why some engine of this world cannot be used (or there is none), or None when all can."""
        names = sorted(p.stem for p in self.folder.glob("*.json"))
        if not names:
            return f"no engines built for world {self.world} in {self.folder}"
        for name in names:
            reason = self.stale_reason(name)
            if reason:
                return f"engine {name}: {reason}"
        return None

    def compile(self, fn: Fn, name: str) -> Fn:
        reason = self.stale_reason(name)
        if reason:
            raise EngineError(refusal(self.world, name, reason, dtype_name(self.dtype)))
        plan = self.folder / str(read_sidecar(self.folder / f"{name}.json")["plan"])
        engine = self.runtime.deserialize_cuda_engine(plan.read_bytes())
        if engine is None:
            raise EngineError(f"--backend trt: TensorRT could not load {plan} (see the log above)")
        return TrtCall(self.trt, engine, name, self.device, self.dtype)
