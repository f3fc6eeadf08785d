"""Open a playable session: config -> device -> checkpoints -> networks -> the family's session."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from engine.backends.device import device_memory, resolve_device, resolve_dtype
from engine.checkpoints.loading import load_into
from engine.checkpoints.resolve import resolve_checkpoint_files
from engine.checkpoints.verify import file_sha256
from engine.core.cli import check_seed
from engine.core.config import check_steps, load_world_config
from engine.core.networks import build_networks, checkpoint_prefix, weight_bytes
from engine.core.schema import gigabytes
from engine.core.session import Session, SessionOptions
from engine.core.side_by_side import SideBySide
from engine.errors import CheckpointError, ConfigError
from engine.families import world_module


def world_overrides(args: argparse.Namespace) -> list[str]:
    """The launcher's `--set KEY=VALUE` entries, with `--game NAME` as `game=NAME`."""
    return [*args.set, *([f"game={args.game}"] if args.game else [])]


def session_extras(args: argparse.Namespace) -> dict[str, Any]:
    """Family-specific launch switches (see SessionOptions.extra)."""
    return {"agent": bool(args.agent), "backend": getattr(args, "backend", "eager")}


def check_pinned_hashes(cfg: DictConfig, files: Mapping[str, Path], explicit: set[str]) -> None:
    """Files the world pins by sha256 (`checkpoints.sha256.<role>`, e.g. a checkpoint shipped in the repo) must
    be those bytes; a file given with --weights is the user's own choice and is not checked."""
    pinned = cfg.checkpoints.get("sha256") or {}
    for role, expected in pinned.items():
        if expected and role in files and role not in explicit:
            actual = file_sha256(files[role])
            if actual != str(expected):
                raise CheckpointError(f"checkpoint {files[role]} has sha256 {actual[:16]}..., world '{cfg.name}' pins "
                                      f"{str(expected)[:16]}... (checkpoints.sha256.{role}): a damaged or replaced file")


def load_networks(cfg: DictConfig, files: Mapping[str, Path], device: torch.device,
                  dtype: torch.dtype) -> dict[str, nn.Module]:
    """Build on the meta device, allocate without random init, then load the weights strictly
    (with the family's `load_weights(module, path, prefix)` where it defines one)."""
    networks = build_networks(cfg, "meta")
    needed, available = weight_bytes(networks, dtype), device_memory(device)
    if needed > available:
        raise ConfigError(f"world '{cfg.name}': its networks need {gigabytes(needed)} for their weights, more than "
                          f"the {gigabytes(available)} of {device}")
    load = getattr(world_module(cfg.family), "load_weights", load_into)
    for role, module in networks.items():
        module.to_empty(device=device)
        load(module, files[role], prefix=checkpoint_prefix(cfg, role))
        networks[role] = module.to(dtype)
    return networks


def open_session(world: str | Path, *, device: str = "auto", dtype: str | None = None,
                 checkpoints: dict[str, Path] | None = None, prompt: str | Path | None = None,
                 sampler: str = "cached", steps: int | None = None, seed: int = 0, prompt_offset: int = 0,
                 allow_download: bool = True, overrides: Sequence[str] = (),
                 extra: dict[str, Any] | None = None) -> Session:
    """A session of any family, reset to its prompt/spawn frames, ready for `step`."""
    cfg = load_world_config(world, overrides)
    check_seed(seed)
    if steps is not None:
        check_steps(cfg, steps)
    family = world_module(cfg.family)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    files = resolve_checkpoint_files(cfg, explicit=checkpoints, allow_download=allow_download)
    check_pinned_hashes(cfg, files, set(checkpoints or {}))
    networks = load_networks(cfg, files, dev, dt)
    options = SessionOptions(sampler=sampler, steps=steps, seed=seed,
                             prompt=None if prompt is None else Path(prompt), prompt_offset=int(prompt_offset),
                             checkpoint_files=dict(files),
                             allow_download=allow_download, extra=dict(extra or {}))
    return family.open_world(cfg, networks, options)


def with_ground_truth(dream: Session, seed: int = 0) -> Session:
    """The dream beside its world's ground truth (the `ground_truth:` world, e.g. the real game), both ticked
    with the same actions (`--side-by-side`)."""
    truth = dream.cfg.get("ground_truth")
    if not truth:
        raise ConfigError(f"world '{dream.world}' names no ground_truth world to play beside (--side-by-side)")
    return SideBySide(open_session(str(truth), device="cpu", seed=seed, allow_download=False), dream)
