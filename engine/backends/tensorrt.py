"""TensorRT engines built from the exported ONNX files, with a json sidecar per engine.

The build uses TensorRT's documented Python API (`trt.Builder`, `create_network`,
`trt.OnnxParser`, a builder config with the precision flag, `build_serialized_network`) rather
than Torch-TensorRT: the ONNX files are already exported and checked in onnxruntime, so the
engine is built from exactly the graph that was verified, and TensorRT is the only extra
dependency.

NOT RUN HERE: TensorRT cannot be installed on any machine available to this project (its
`tensorrt-cu13-libs` wheel downloads from NVIDIA's own index), so `build_engine` and
`tensorrt_environment` are written against the documented API and have never been executed by
our tests. What is tested: the one-line errors when TensorRT or a GPU is missing, the sidecar
contents and the rebuild decision (`check_sidecar`).

Sidecar (`<network>.json` beside `<network>.onnx` / `<network>.plan`): input/output names and
shapes, precision, GPU name and compute capability, TensorRT version, source checkpoint sha256,
onnx file sha256.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import ModuleType

from engine.errors import EngineError

INSTALL_HINT = "pip install .[trt] (needs an NVIDIA GPU and driver)"
PRECISIONS = ("fp32", "fp16", "bf16")

# Sidecar fields whose change makes an engine stale, with the reason printed for each.
REBUILD_FIELDS = (
    ("checkpoint_sha256", "the source checkpoint changed"),
    ("onnx_sha256", "the exported ONNX graph changed"),
    ("precision", "the precision changed"),
    ("gpu", "the GPU changed"),
    ("tensorrt_version", "the TensorRT version changed"),
)


def import_tensorrt() -> ModuleType:
    """The `tensorrt` module, or a one-line EngineError with the install hint."""
    try:
        import tensorrt
    except ImportError:
        raise EngineError(f"TensorRT is not installed: {INSTALL_HINT}") from None
    return tensorrt


def gpu_info() -> dict[str, str]:
    """Name and compute capability of the current CUDA GPU; one-line EngineError without one."""
    import torch

    if not torch.cuda.is_available():
        raise EngineError(f"TensorRT engines need a CUDA GPU and none is visible to PyTorch {torch.__version__}: "
                          f"{INSTALL_HINT}")
    major, minor = torch.cuda.get_device_capability()
    return {"name": torch.cuda.get_device_name(), "compute_capability": f"{major}.{minor}"}


def tensorrt_environment() -> dict[str, object]:
    """The sidecar fields that describe this machine: `gpu` and `tensorrt_version`."""
    trt = import_tensorrt()
    return {"gpu": gpu_info(), "tensorrt_version": str(trt.__version__)}


def onnx_sha256(path: Path) -> str:
    """sha256 of an ONNX file, and of its external-data file when it has one."""
    from engine.checkpoints.verify import file_sha256

    digest = file_sha256(path)
    data = path.with_name(path.name + ".data")
    if data.is_file():
        digest = hashlib.sha256(f"{digest}:{file_sha256(data)}".encode()).hexdigest()
    return digest


def onnx_signature(path: Path) -> dict[str, list[dict]]:
    """Input and output names, shapes and element types of an ONNX file (weights not loaded)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def describe(values) -> list[dict]:
        return [{"name": v.name, "shape": [d.dim_value for d in v.type.tensor_type.shape.dim],
                 "dtype": onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name}
                for v in values]

    return {"inputs": describe(model.graph.input), "outputs": describe(model.graph.output)}


def read_sidecar(path: Path) -> dict | None:
    """A sidecar's contents, or None when there is none (an unreadable one counts as none)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_sidecar(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def check_sidecar(sidecar: dict | None, current: dict) -> str | None:
    """One-line reason to rebuild the engine `sidecar` describes, or None when it can be reused.

    `current` holds the same fields for the engine that would be built now; a field it leaves
    out or sets to None (not known yet, e.g. the GPU before TensorRT is probed) is not compared.
    """
    if not sidecar or not sidecar.get("plan"):
        return "no engine has been built yet"
    for key, reason in REBUILD_FIELDS:
        want = current.get(key)
        if want is not None and sidecar.get(key) != want:
            return f"{reason} ({_short(sidecar.get(key))} -> {_short(want)})"
    return None


def _short(value: object) -> str:
    if isinstance(value, dict):
        return " ".join(str(v) for v in value.values())
    text = str(value)
    return text[:12] if len(text) == 64 else text


def build_engine(onnx_path: Path, plan_path: Path, precision: str, workspace_gib: float | None = None) -> None:
    """Parse `onnx_path` with TensorRT's ONNX parser and write a serialized engine to `plan_path`.

    fp16/bf16 set the builder flag that lets TensorRT pick reduced-precision kernels (weakly
    typed network, fp32 ONNX). Written against the documented API; not run on our machines.
    """
    if precision not in PRECISIONS:
        raise EngineError(f"precision {precision}: expected one of {', '.join(PRECISIONS)}")
    trt = import_tensorrt()
    gpu_info()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "bf16":
        config.set_flag(trt.BuilderFlag.BF16)
    if workspace_gib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_bytes(bytes(serialized))
