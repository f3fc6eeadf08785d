"""`python -m engine.families.doom.ship RUN_DIR`: the shipped Doom checkpoint from a training run.

Writes the run's EMA weights (what its world plays) as bfloat16 safetensors to `checkpoints/doom/doom.safetensors`
(half the bytes of float32; the player loads them into float32 networks), with the training step and config in
the file's metadata, and pins the file's sha256 in `assets/worlds/doom.yaml` (`checkpoints.sha256.world_model`).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from engine.checkpoints.verify import file_sha256
from engine.core.config import WORLDS_DIR
from engine.errors import EngineError

PROJECT_ROOT = Path(__file__).resolve().parents[3]
TARGET = PROJECT_ROOT / "checkpoints" / "doom" / "doom.safetensors"
WORLD = WORLDS_DIR / "doom.yaml"
PIN = re.compile(r"^(\s+world_model: )(null|[0-9a-f]{64})(.*)$", re.MULTILINE)


def ship(run_dir: Path, target: Path = TARGET, world: Path = WORLD) -> str:
    latest = run_dir / "checkpoints" / "latest"  # names the newest step folder
    checkpoint = run_dir / "checkpoints" / (latest.read_text().strip() if latest.is_file() else "")
    ema = checkpoint / "ema.safetensors"
    if not ema.is_file():
        raise EngineError(f"{run_dir}: no checkpoints/latest/ema.safetensors (train it first)")
    with safe_open(str(ema), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys() if key.startswith("world_model.")}  # noqa: SIM118
    config = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").is_file() else ""
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in tensors.items()}, str(target),
              metadata={"step": checkpoint.name, "run": run_dir.name, "config": json.dumps(config)})
    digest = file_sha256(target)
    text = world.read_text()
    if not PIN.search(text):
        raise EngineError(f"{world}: no checkpoints.sha256.world_model line to pin")
    world.write_text(PIN.sub(lambda m: f"{m.group(1)}{digest}{m.group(3)}", text, count=1))
    return digest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.families.doom.ship", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run of `python -m engine.train --config doom`")
    args = parser.parse_args(argv)
    try:
        digest = ship(args.run_dir)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {TARGET} ({TARGET.stat().st_size / 2**20:.1f} MiB, sha256 {digest}), pinned in {WORLD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
