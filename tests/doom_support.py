"""Shared pieces of the Doom tests: short recordings of the real game and a tiny Doom world model."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

from engine.core.config import WORLDS_DIR
from engine.families.doom.network import DoomWorldModel
from engine.families.vizdoom.collect import main as collect

TINY_NETWORK = {"frame_size": [64, 80], "context": 4, "memory": 2, "action_dim": 7, "cond_channels": 16,
                "channels": [8, 16], "depths": [1, 1], "attn_depths": [0, 1], "sigma_data": 0.5,
                "sigma_offset_noise": 0.3, "pose_scale": 256.0}


def collect_recordings(out: Path, episodes: int, ticks: int, split: str = "train", policy: str = "explore") -> Path:
    """`episodes` recordings of `ticks` ticks of the real game under out/<split>/."""
    assert collect(["--episodes", str(episodes), "--ticks", str(ticks), "--split", split, "--policy", policy,
                    "--max-start-offset", "50", "--out", str(out)]) == 0
    return out / split


def tiny_doom_world(folder: Path, seed: int = 0, network: dict | None = None, **overrides) -> Path:
    """A world yaml like assets/worlds/doom.yaml with a tiny randomly initialised world model beside it
    (`network`: its sizes over TINY_NETWORK's)."""
    network = TINY_NETWORK | (network or {})
    torch.manual_seed(seed)
    model = DoomWorldModel(**network)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.02)
    weights = folder / "tiny_doom.safetensors"
    save_file({f"world_model.{k}": v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    world = yaml.safe_load((WORLDS_DIR / "doom.yaml").read_text())
    world |= {"name": "tiny-doom", "networks": {"world_model": network}}
    world["checkpoints"] = {"files": {"world_model": weights.name}, "prefixes": {"world_model": "world_model."}}
    for key, value in overrides.items():
        world[key] = value | world.get(key, {}) if isinstance(value, dict) else value
    path = folder / "tiny_doom.yaml"
    path.write_text(yaml.safe_dump(world, sort_keys=False))
    return path
