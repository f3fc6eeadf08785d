"""Training checkpoints: `checkpoints/step_NNNNNN/` with the model and EMA weights as safetensors (full,
unsharded state dicts of the training module: `<network>.<the network's official key>`, loadable by the
player with a key prefix) and `train_state.pt` (optimizer state keyed by parameter name, EMA counters,
step). `checkpoints/latest` names the newest.

Saving and loading go through torch.distributed.checkpoint's state-dict API, so one file format serves a
single process, DDP and FSDP, and a run may resume with another number of processes.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from engine.checkpoints.loading import alias_groups, compare_shapes, fill_aliases, state_shapes, value_problem
from engine.checkpoints.verify import deduplicate_shared
from engine.errors import CheckpointError, first_line
from engine.train.distributed import DistContext, barrier, unwrap
from engine.train.ema import EMA

MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
STATE_FILE = "train_state.pt"
LATEST = "latest"
GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True)
STEP_DIR = re.compile(r"step_\d{6,}")


def step_dir(root: Path, step: int) -> Path:
    return root / f"step_{step:06d}"


def latest_checkpoint(root: Path) -> Path | None:
    """The folder `checkpoints/latest` points at, or None when no checkpoint was completed."""
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        name = ""
    if not STEP_DIR.fullmatch(name):
        raise CheckpointError(f"checkpoint pointer {pointer} is damaged: expected the name of a step folder "
                              f"(step_NNNNNN), found {name[:40]!r}")
    folder = root / name
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
    """Restore model, EMA and optimizer from `folder` (every process reads the files); returns the train state.
    A damaged or foreign file is a one-line CheckpointError naming it."""
    state = read_train_state(folder / STATE_FILE)
    full = StateDictOptions(full_state_dict=True)
    weights = fill_aliases(read_weights(folder / MODEL_FILE, unwrap(model)), alias_groups(unwrap(model)))
    _restore(folder / MODEL_FILE, lambda: set_model_state_dict(model, weights, options=full))
    _restore(folder / STATE_FILE, lambda: set_optimizer_state_dict(model, optimizer, state["optimizer"], options=full))
    averaged = read_weights(folder / EMA_FILE, unwrap(model))
    missing = [name for name in ema.parameters() if name not in averaged]
    if missing:
        raise CheckpointError(f"checkpoint {folder / EMA_FILE} lacks {len(missing)} averaged parameters "
                              f"(e.g. {missing[0]}): a damaged checkpoint")
    _restore(folder / EMA_FILE, lambda: ema.load({name: _like(averaged[name], shadow)
                                                   for name, shadow in ema.parameters().items()}, state["ema"]))
    return state


def read_train_state(path: Path) -> dict[str, Any]:
    """`train_state.pt`: {step, optimizer, ema} as `save_checkpoint` writes it."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file fails anywhere in torch's reader
        raise CheckpointError(f"checkpoint {path} is damaged: {first_line(exc)}") from None
    step = state.get("step") if isinstance(state, dict) else None
    if (isinstance(step, bool) or not isinstance(step, int) or step < 0 or not isinstance(state.get("optimizer"), dict)
            or not isinstance(state.get("ema"), dict) or not isinstance(state["ema"].get("updates"), int)):
        raise CheckpointError(f"checkpoint {path} is not a training state: expected step, optimizer and ema entries")
    return state


def read_weights(path: Path, model: nn.Module) -> dict[str, torch.Tensor]:
    """A checkpoint's weights file: the model's keys and shapes exactly (aliases of one shared tensor stored once),
    each tensor's values checked (`value_problem`)."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist: a damaged checkpoint folder")
    try:
        weights = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"checkpoint {path} is damaged: {first_line(exc)}") from None
    diff = compare_shapes(state_shapes(model), {key: tuple(t.shape) for key, t in weights.items()}, alias_groups(model))
    if not diff.ok:
        raise CheckpointError(f"checkpoint {path} does not fit this run's model: {diff.summary()}")
    expected = model.state_dict(keep_vars=True)
    for key, tensor in weights.items():
        problem = value_problem(tensor, expected[key])
        if problem:
            raise CheckpointError(f"checkpoint {path}: {key} {problem}")
    return weights


def _restore(path: Path, restore: Callable[[], object]) -> None:
    """Run `restore`; what does not fit the model (keys, shapes, optimizer groups) names `path`."""
    try:
        restore()
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:
        raise CheckpointError(f"checkpoint {path} does not fit this run's model: {first_line(exc)}") from None


def _like(full: torch.Tensor, shadow: torch.Tensor) -> torch.Tensor:
    """`full` laid out like `shadow`: sharded the same way when `shadow` is an FSDP DTensor."""
    if hasattr(shadow, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(full.to(shadow.device), shadow.device_mesh, shadow.placements)
    return full
