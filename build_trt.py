"""Export a world's networks to ONNX, check them in onnxruntime, and build TensorRT engines.

    python build_trt.py --world minecraft [--config my_world.yaml] [--weights dit=path]
                        [--precision fp16|bf16|fp32] [--out engines/] [--onnx-only]

Exports every network a tick of the world calls, in its play configuration (static shapes; for Oasis
the context prefill, the one-frame fill and the cached denoising step, the units `--backend compile`
runs; for WorldMAR (minecraft-mar, e.g. `--weights worldmar=my_mar.safetensors`) the frame's conditioning,
masked encoder/decoder step and diffusion head at the largest reveal group, with the VAE decoder; for
DIAMOND the denoiser/upsampler, reward/end model and actor-critic), checks each ONNX graph
against PyTorch in onnxruntime, then builds the engines. Writes `<out>/<world>/<network>.onnx`,
`<network>.json` (sidecar) and, unless `--onnx-only`, `<network>.plan`. An engine whose sidecar still matches (checkpoint, ONNX graph, precision, GPU,
TensorRT version) is reused. The ONNX graphs are exported in fp32; the precision is TensorRT's.
TensorRT itself was never run on this project's machines (see engine/backends/tensorrt.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from engine.backends.tensorrt import INSTALL_HINT
from engine.errors import ConfigError, EngineError

PROJECT_ROOT = Path(__file__).resolve().parent


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", default="minecraft", help="world name under assets/worlds/ (minecraft, minecraft-mar, atari, csgo)")
    parser.add_argument("--game", help="game of a multi-game world (atari), same as the launcher's --game")
    parser.add_argument("--config", help="a world .yaml file (overrides --world)")
    parser.add_argument("--weights", action="append", default=[], metavar="ROLE=PATH",
                        help="checkpoint file for a network role, e.g. dit=./my.safetensors (repeatable)")
    parser.add_argument("--precision", default="bf16", choices=("fp16", "bf16", "fp32"))
    parser.add_argument("--out", default=str(PROJECT_ROOT / "engines"), help="engines folder")
    parser.add_argument("--onnx-only", action="store_true", help="stop after the ONNX export and check")
    parser.add_argument("--atol", type=float, default=1e-3,
                        help="largest accepted |onnxruntime - PyTorch| difference (fp32)")
    parser.add_argument("--offline", "--no-download", dest="no_download", action="store_true",
                        help="never download missing checkpoints (as the launcher's --offline)")
    return parser.parse_args(argv)


def require_export_tools() -> None:
    """ONNX export needs the `trt` extra's onnx, onnxscript (torch.export's ONNX translator) and onnxruntime."""
    import importlib.util

    missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise EngineError(f"ONNX export needs {', '.join(missing)}: {INSTALL_HINT}")


def build(args: argparse.Namespace) -> None:
    import torch

    from engine.backends.export import export_all
    from engine.backends.tensorrt import (
        build_engine,
        check_sidecar,
        onnx_sha256,
        onnx_signature,
        read_sidecar,
        tensorrt_environment,
        write_sidecar,
    )
    from engine.checkpoints.resolve import parse_weight_overrides, resolve_checkpoint_files
    from engine.checkpoints.verify import files_sha256
    from engine.core.config import load_world_config
    from engine.core.loader import load_networks
    from engine.families import export_function

    require_export_tools()
    cfg = load_world_config(args.config or args.world, [f"game={args.game}"] if args.game else [])
    exports = export_function(str(cfg.family))
    if exports is None:
        raise ConfigError(f"world '{cfg.name}': build_trt.py has no export for family '{cfg.family}'")
    files = resolve_checkpoint_files(cfg, explicit=parse_weight_overrides(args.weights),
                                     allow_download=not args.no_download)
    networks = load_networks(cfg, files, torch.device("cpu"), torch.float32)
    folder = Path(args.out) / str(cfg.name)
    specs = exports(cfg, networks)
    previous = {spec.name: read_sidecar(folder / f"{spec.name}.json") for spec in specs}
    checkpoint_sha = files_sha256(files)
    exported = export_all(specs, folder, args.atol)

    sidecars = {}
    for spec in specs:
        result = exported[spec.name]
        sidecars[spec.name] = {
            "world": str(cfg.name), "network": spec.name, "role": spec.role, "onnx": result["path"].name,
            **onnx_signature(result["path"]), "onnx_sha256": onnx_sha256(result["path"]),
            "checkpoint": str(files[spec.role]), "checkpoint_sha256": checkpoint_sha[spec.role],
            "precision": args.precision, "exporter": result["exporter"],
            "onnx_max_abs_diff": result["max_abs_diff"], "plan": None, "gpu": None, "tensorrt_version": None,
        }
        print(f"{spec.name}: {result['path']} ({result['exporter']} exporter, "
              f"max |onnxruntime - torch| = {result['max_abs_diff']:.2e})")
    # The cache decision before TensorRT is probed: what changed since the engine on disk was built.
    reasons = {}
    for name, sidecar in sidecars.items():
        old = previous[name]
        reasons[name] = check_sidecar(old, sidecar)
        if reasons[name] is None:  # the engine built earlier is still this graph: keep its record
            sidecar |= {key: old.get(key) for key in ("plan", "gpu", "tensorrt_version")}
        elif not args.onnx_only:
            print(f"{name}: engine to build: {reasons[name]}")
        write_sidecar(folder / f"{name}.json", sidecar)
    if args.onnx_only:
        print(f"ONNX files and sidecars in {folder}; no TensorRT engines built (--onnx-only)")
        return

    environment = tensorrt_environment()
    from tqdm import tqdm

    for name in tqdm(sidecars, desc="build TensorRT", unit="net"):
        sidecar = sidecars[name] | environment
        plan = folder / f"{name}.plan"
        reason = reasons[name] or check_sidecar(sidecars[name], sidecar)
        if reason is None and not plan.is_file():
            reason = "the engine file is missing"
        if reason is None:
            tqdm.write(f"{name}: reusing {plan}")
            continue
        tqdm.write(f"{name}: building {plan} ({args.precision}): {reason}")
        build_engine(folder / sidecar["onnx"], plan, args.precision)
        write_sidecar(folder / f"{name}.json", sidecar | {"plan": plan.name})


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        build(args)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
