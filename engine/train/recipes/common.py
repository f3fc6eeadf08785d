"""Pieces every recipe uses: weight files found as the player finds them, optional starting weights,
writing the world yaml and a prompt frame next to the checkpoint."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch import nn

from engine.checkpoints.loading import load_into, read_state_dict
from engine.checkpoints.resolve import is_user_path, resolve_checkpoint_files
from engine.errors import ConfigError, display_path
from engine.train.config import available_configs

WORLD_FILE = "world.yaml"


def resolve_weights(cfg: DictConfig, role: str, entry: str, repo: str | None = None, key: str | None = None) -> Path:
    """A weights file named like a world yaml's `checkpoints.files` entry (a path relative to the working
    directory, or a file of hub repo `repo`), found or downloaded the way the player does. With `key` (the
    config key that names it) a missing path is an error naming that key."""
    if key is not None and is_user_path(entry) and not Path(entry).expanduser().is_file():
        path = Path(entry).expanduser()
        raise ConfigError(f"{key}: {display_path(path)} does not exist{run_hint(path)}")
    lookup = OmegaConf.create({"name": str(cfg.name), "source_dir": str(Path.cwd()),
                               "checkpoints": {"repo": repo, "files": {role: entry}}})
    return resolve_checkpoint_files(lookup)[role].resolve()


def run_hint(path: Path) -> str:
    """For a file of a training run's folder (`runs/<config>/...`): the command that writes it; else ''."""
    parts = path.parts
    if len(parts) >= 3 and parts[-3] == "runs" and parts[-2] in available_configs():
        return f" (train it first: python -m engine.train --config {parts[-2]})"
    return ""


def load_initial_weights(cfg: DictConfig, networks: Mapping[str, nn.Module],
                         load: Callable[..., None] = load_into) -> None:
    """`init.<role>: PATH` starts network `role` from a file: the official layout, or one of our
    checkpoints (keys prefixed `<role>.`); `load(module, state, prefix=...)` loads it strictly."""
    for role, entry in (cfg.get("init") or {}).items():
        state = read_state_dict(resolve_weights(cfg, str(role), str(entry)))
        prefixed = all(key.startswith(f"{role}.") for key in state)
        load(networks[str(role)], state, prefix=f"{role}." if prefixed else None)


def write_prompt(run_dir: Path, frame: np.ndarray) -> str:
    """Save one uint8 (H, W, 3) frame as the world's prompt image; returns its file name."""
    Image.fromarray(frame).save(run_dir / "prompt.png")
    return "prompt.png"


def write_world_yaml(run_dir: Path, world: Mapping[str, Any], overrides: DictConfig | None) -> Path:
    """The recipe's world config with the training config's `world:` section merged over it."""
    merged = OmegaConf.merge(OmegaConf.create(dict(world)), overrides or {})
    path = run_dir / WORLD_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("# Written by `python -m engine.train`: play it with `python launcher.py --config "
                   f"{path}`\n" + yaml.safe_dump(OmegaConf.to_container(merged, resolve=True), sort_keys=False))
    tmp.replace(path)
    return path
