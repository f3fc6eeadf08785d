"""Training checkpoints: `checkpoints/step_NNNNNN/` with the model and EMA weights as safetensors (full,
unsharded state dicts of the training module: `<network>.<the network's official key>`, loadable by the
player with a key prefix) and `train_state.pt` (optimizer state keyed by parameter name, EMA counters,
step). `checkpoints/latest` names the newest.

Saving and loading go through torch.distributed.checkpoint's state-dict API, so one file format serves a
single process, DDP and FSDP, and a run may resume with another number of processes.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from engine.checkpoints.loading import alias_groups, fill_aliases
from engine.checkpoints.verify import deduplicate_shared
from engine.errors import CheckpointError
from engine.train.distributed import DistContext, barrier, unwrap
from engine.train.ema import EMA

MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
STATE_FILE = "train_state.pt"
LATEST = "latest"
GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True)


def step_dir(root: Path, step: int) -> Path:
    return root / f"step_{step:06d}"


def latest_checkpoint(root: Path) -> Path | None:
    """The folder `checkpoints/latest` points at, or None when no checkpoint was completed."""
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    folder = root / pointer.read_text().strip()
    if not (folder / STATE_FILE).is_file():
        raise CheckpointError(f"checkpoint pointer {pointer} names {folder}, which has no {STATE_FILE}")
    return folder


def gather_ema(model: nn.Module, ema: EMA, full_model: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The full model state dict with the averaged parameters in place of the trained ones (collective
    under FSDP: every process gathers its shards)."""
    averaged = {}
    for name, tensor in ema.parameters().items():
        full = tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor
        averaged[name] = full.detach().cpu()
    return {**full_model, **averaged}


def save_checkpoint(root: Path, step: int, model: nn.Module, ema: EMA, optimizer: torch.optim.Optimizer,
                    ctx: DistContext, keep_last: int = 2) -> Path:
    """Write step `step` into `root/step_NNNNNN/`, then move `latest` to it and drop older folders.

    `latest` moves only after every file is complete, so a run killed mid-save resumes from the previous one.
    """
    full_model = get_model_state_dict(model, options=GATHER)
    full_ema = gather_ema(unwrap(model), ema, full_model)
    optim = get_optimizer_state_dict(model, optimizer, options=GATHER)
    folder = step_dir(root, step)
    if ctx.is_main:
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        metadata = {"step": str(step), "format": "pt"}
        save_file(deduplicate_shared(full_model)[0], str(partial / MODEL_FILE), metadata=metadata)
        save_file(deduplicate_shared(full_ema)[0], str(partial / EMA_FILE), metadata=metadata)
        torch.save({"step": step, "optimizer": optim, "ema": ema.state_dict()}, partial / STATE_FILE)
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)
        pointer = root / (LATEST + ".tmp")
        pointer.write_text(folder.name)
        os.replace(pointer, root / LATEST)
        stale = [*root.glob("step_*.partial"), *(sorted(root.glob("step_??????"))[:-keep_last] if keep_last > 0 else [])]
        for old in stale:
            if old != folder:
                shutil.rmtree(old, ignore_errors=True)
    barrier(ctx)
    return folder


def load_checkpoint(folder: Path, model: nn.Module, ema: EMA, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model, EMA and optimizer from `folder` (every process reads the files); returns the train state."""
    state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    weights = fill_aliases(load_file(str(folder / MODEL_FILE)), alias_groups(unwrap(model)))
    set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True))
    set_optimizer_state_dict(model, optimizer, state["optimizer"], options=StateDictOptions(full_state_dict=True))
    averaged = load_file(str(folder / EMA_FILE))
    ema.load({name: _like(averaged[name], shadow) for name, shadow in ema.parameters().items()}, state["ema"])
    return state


def _like(full: torch.Tensor, shadow: torch.Tensor) -> torch.Tensor:
    """`full` laid out like `shadow`: sharded the same way when `shadow` is an FSDP DTensor."""
    if hasattr(shadow, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(full.to(shadow.device), shadow.device_mesh, shadow.placements)
    return full
