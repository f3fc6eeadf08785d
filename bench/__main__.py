"""`python -m bench [name ...]`: tick and retrieval benchmarks; the last line is JSON."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

import torch

from bench import kernels, retrieval
from engine.backends.choose import BACKENDS
from engine.backends.device import resolve_device, resolve_dtype
from engine.errors import EngineError
from engine.families import benches, resolve


def run_retrieval(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict:
    return retrieval.run(device)


def run_kernels(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict:
    return kernels.run(device, dtype)


Bench = tuple[Callable[[argparse.Namespace, torch.device, torch.dtype], dict], Callable[[dict], None]]


def all_benches() -> dict[str, Bench]:
    """Every family's benches (engine.families registry), then the generic ones: name -> (run, print_table)."""
    found: dict[str, Bench] = {}
    for name, path in benches().items():
        run = resolve(path)
        found[name] = (run, resolve(path.partition(":")[0] + ":print_table"))
    return found | {"retrieval": (run_retrieval, retrieval.print_table), "kernels": (run_kernels, kernels.print_table)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    known = all_benches()
    parser.add_argument("worlds", nargs="*", default=[name for name in known if name != "kernels"],
                        choices=list(known))
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--backend", default="eager", choices=BACKENDS,
                        help="network calls of the fast path: eager, compile (torch.compile + CUDA graphs), trt, auto")
    parser.add_argument("--dtype", default=None, help="fp32, bf16 or fp16 (default: bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--size", choices=("medium", "full"), default=None,
                        help="network size (default: medium on CPU, full on CUDA)")
    parser.add_argument("--window", type=int, default=None, help="sampler window (default: 8 on CPU, 32 on CUDA)")
    parser.add_argument("--steps", type=int, default=10, help="denoising steps per tick")
    parser.add_argument("--ticks", type=int, default=None, help="timed ticks per sampler (default: 5 CPU, 20 CUDA)")
    parser.add_argument("--preset", default="fast", help="csgo sampler preset: fast or higher_quality")
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device)
        dtype = resolve_dtype(args.dtype, device)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    figures = []
    for world in args.worlds:
        run, print_table = known[world]
        try:
            result = run(args, device, dtype)
        except EngineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print_table(result)
        figures.append(result)
    print(json.dumps({"benchmarks": figures}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
