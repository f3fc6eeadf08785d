"""A unit-replacing backend, as `--backend trt` is, whose engines are onnxruntime sessions of the ONNX files that
`build_trt.py --onnx-only` writes. A world's tick run through it proves that the world calls every unit by the
name and with the inputs `build_trt.py` exported, which is all a TensorRT engine needs, without TensorRT."""

from __future__ import annotations

from pathlib import Path

import torch

from engine.backends.base import Backend, Fn
from engine.backends.export import onnx_session


class OnnxUnitsBackend(Backend):
    name = "onnxruntime-units"
    replaces_units = True

    def __init__(self, folder: Path) -> None:
        super().__init__(torch.device("cpu"), torch.float32)
        self.folder = Path(folder)
        self.units: list[str] = []  # the unit names the world asked for, in order

    def compile(self, fn: Fn, name: str) -> Fn:
        session = onnx_session(self.folder / f"{name}.onnx")
        self.units.append(name)

        def run(*args: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
            feeds = {spec.name: arg.detach().cpu().numpy()
                     for spec, arg in zip(session.get_inputs(), args, strict=True)}
            outputs = [torch.from_numpy(out) for out in session.run(None, feeds)]
            return outputs[0] if len(outputs) == 1 else tuple(outputs)

        return run
