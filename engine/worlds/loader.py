"""Open a playable session: config -> device -> checkpoints -> networks -> prompt frames."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from engine.backends.device import resolve_device, resolve_dtype
from engine.checkpoints.loading import load_into
from engine.checkpoints.resolve import resolve_checkpoint_files
from engine.checkpoints.verify import checkpoint_prefix
from engine.worlds.config import load_world_config
from engine.worlds.networks import build_networks
from engine.worlds.oasis import OasisSession
from engine.worlds.prompt import load_prompt_frames
from engine.worlds.spawn import resolve_prompt_file


def load_networks(cfg: DictConfig, files: dict[str, Path], device: torch.device,
                  dtype: torch.dtype) -> dict[str, nn.Module]:
    """Build on the meta device, allocate without random init, then load the weights strictly."""
    networks = build_networks(cfg, "meta")
    for role, module in networks.items():
        module.to_empty(device=device)
        load_into(module, files[role], prefix=checkpoint_prefix(cfg, role))
        networks[role] = module.to(dtype)
    return networks


def open_session(world: str | Path, *, device: str = "auto", dtype: str | None = None,
                 checkpoints: dict[str, Path] | None = None, prompt: str | Path | None = None,
                 sampler: str = "cached", steps: int | None = None, seed: int = 0,
                 allow_download: bool = True) -> OasisSession:
    """A session reset to its prompt frames, ready for `step`."""
    cfg = load_world_config(world)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    files = resolve_checkpoint_files(cfg, explicit=checkpoints, allow_download=allow_download)
    prompt_path = resolve_prompt_file(cfg, prompt, allow_download=allow_download)
    networks = load_networks(cfg, files, dev, dt)
    session = OasisSession(cfg, networks["dit"], networks["vae"], sampler=sampler, steps=steps, seed=seed,
                           checkpoint_files=files)
    height, width = session.frame_size
    frames = load_prompt_frames(prompt_path, int(cfg.get("prompt", {}).get("frames", 1)), height, width)
    session.reset(frames)
    return session
