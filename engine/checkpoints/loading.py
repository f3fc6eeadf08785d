"""Reading weight files safely and loading them strictly: every key and shape must match the network.

`.safetensors` files are read with safetensors; `.pt/.pth/.ckpt/.bin` pickles only with
`torch.load(weights_only=True)`, which never runs code from the file. Besides keys and shapes, the weights of
a floating-point tensor must be floating point, finite and within +-MAX_WEIGHT (`value_problem`): a file of
NaNs, infinities, 1e30s or integers loads without complaint into PyTorch and plays all-black frames.
"""

from __future__ import annotations

import math
import pickle
import re
import zipfile
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from engine.errors import CheckpointError, first_line

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
NESTED_STATE_KEYS = ("state_dict",)
LIST_LIMIT = 8
MAX_WEIGHT = 1e6
"""Trained networks keep their weights and buffers within ~1e3 in magnitude; one beyond this is a corrupt file."""

Shape = tuple[int, ...]


def checkpoint_format(path: Path) -> str:
    """'safetensors' or 'pickle', from the file suffix."""
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return "safetensors"
    if suffix in PICKLE_SUFFIXES:
        return "pickle"
    raise CheckpointError(f"checkpoint {path} has an unknown suffix '{suffix}': expected one of "
                          f"{', '.join(SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES)}")


def load_pickle(path: Path, mmap: bool = True) -> object:
    """`torch.load(weights_only=True)` on the CPU; memory-mapped when the file is in the zip format."""
    _require_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True,
                          mmap=mmap and zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"checkpoint {path} holds pickled objects that safe loading (weights_only) refuses "
            f"({_refusal_reason(exc)}): in the program that wrote it, re-save only the tensors "
            f"(torch.save(model.state_dict(), 'weights.pt')), then run "
            f"`python -m engine.checkpoints convert weights.pt`") from None
    except Exception as exc:  # a damaged file fails anywhere in torch's reader (zip, pickle, storages)
        raise CheckpointError(f"checkpoint {path} is not a readable PyTorch file: {first_line(exc)}") from None


def read_state_dict(path: str | Path, prefix: str | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file on the CPU, keyed as the network names them.

    A Lightning-style `{"state_dict": {...}, ...}` pickle is unwrapped. With `prefix`, only keys
    starting with it are kept, without it (DIAMOND stores `denoiser.`, `actor_critic.`, ... side by side).
    """
    path = Path(path)
    if checkpoint_format(path) == "safetensors":
        _require_file(path)
        try:
            state = load_file(path, device="cpu")
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"checkpoint {path} is not a readable safetensors file: {first_line(exc)}") from None
    else:
        state = tensor_mapping(load_pickle(path), path)
    return strip_prefix(state, prefix, path)


def tensor_mapping(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """The `{name: tensor}` mapping inside a loaded pickle, or a one-line error saying what was found."""
    if isinstance(obj, Mapping):
        for key in NESTED_STATE_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict of tensors")
    bad = [str(k) for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if bad:
        raise CheckpointError(f"checkpoint {path}: entries {_listing(bad)} are not tensors; expected a state dict "
                              f"of named tensors (top-level keys: {_listing([str(k) for k in obj])})")
    return dict(obj)


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str | None,
                 source: str | Path = "state dict") -> dict[str, torch.Tensor]:
    """Keys starting with `prefix`, without it; all keys unchanged when `prefix` is empty."""
    if not prefix:
        return dict(state)
    kept = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
    if not kept:
        raise CheckpointError(f"checkpoint {source} has no keys starting with '{prefix}' "
                              f"(its keys start with: {_listing(sorted({k.split('.')[0] + '.' for k in state}))})")
    return kept


def alias_groups(module: nn.Module) -> list[list[str]]:
    """Names of the module's state-dict entries that are one tensor under several names.

    safetensors writes such a tensor once, so a file lacking all but one of its names is complete.
    Real tensors are compared by the memory they view; on the meta device (no memory) by identity
    of the parameter or buffer object.
    """
    return _alias_groups(module.state_dict(keep_vars=True))


def fill_aliases(state: dict[str, torch.Tensor], groups: Iterable[Sequence[str]]) -> dict[str, torch.Tensor]:
    """Give every name of a shared tensor the entry stored under one of its names (safetensors keeps one)."""
    for group in groups:
        stored = next((name for name in group if name in state), None)
        if stored is not None:
            for name in group:
                state.setdefault(name, state[stored])
    return state


def _alias_groups(state: Mapping[str, torch.Tensor]) -> list[list[str]]:
    groups: dict[object, list[str]] = defaultdict(list)
    for name, tensor in state.items():
        groups[view_identity(tensor)].append(name)
    return [sorted(names) for names in groups.values() if len(names) > 1]


def view_identity(tensor: torch.Tensor) -> object:
    """Equal for two tensors exactly when they are the same tensor under two names."""
    if tensor.device.type == "meta" or tensor.numel() == 0:
        return ("object", id(tensor))
    return ("view", tensor.device, tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tensor.stride())


@dataclass
class StateDiff:
    """How a checkpoint's keys and shapes differ from what a network expects."""

    missing: list[tuple[str, Shape]] = field(default_factory=list)
    unexpected: list[tuple[str, Shape]] = field(default_factory=list)
    wrong_shape: list[tuple[str, Shape, Shape]] = field(default_factory=list)
    bad_values: list[tuple[str, str]] = field(default_factory=list)  # (key, what is wrong: value_problem)
    hint: str = ""

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_shape or self.bad_values)

    def items(self) -> list[str]:
        """One readable entry per problem, each naming its key."""
        return ([f"missing {key}: expected {_shape(shape)}" for key, shape in self.missing]
                + [f"unexpected {key} {_shape(shape)}" for key, shape in self.unexpected]
                + [f"wrong shape {key}: expected {_shape(want)}, found {_shape(got)}"
                   for key, want, got in self.wrong_shape]
                + [f"bad values {key}: {problem}" for key, problem in self.bad_values])

    def summary(self, limit: int = LIST_LIMIT) -> str:
        """Counts, then up to `limit` entries of each kind, on one line."""
        parts = []
        for label, entries in (("missing", self.missing), ("unexpected", self.unexpected),
                               ("wrong shape", self.wrong_shape), ("bad values", self.bad_values)):
            if not entries:
                continue
            described = [_describe(entry) for entry in entries]
            parts.append(f"{len(entries)} {label} ({_listing(described, limit)})")
        return "; ".join(parts) + (f"; {self.hint}" if self.hint else "")


def compare_shapes(expected: Mapping[str, Sequence[int]], found: Mapping[str, Sequence[int]],
                   aliases: Iterable[Sequence[str]] = ()) -> StateDiff:
    """Keys and shapes of a file (`found`) against a network (`expected`).

    A key of an alias group is not missing when another key of the same group is present.
    """
    group_of = {name: tuple(group) for group in aliases for name in group}
    diff = StateDiff()
    for key, shape in expected.items():
        if key in found:
            if tuple(found[key]) != tuple(shape):
                diff.wrong_shape.append((key, tuple(shape), tuple(found[key])))
        elif not any(alias in found for alias in group_of.get(key, ())):
            diff.missing.append((key, tuple(shape)))
    diff.unexpected = [(key, tuple(shape)) for key, shape in found.items() if key not in expected]
    diff.hint = _prefix_hint(diff, group_of)
    return diff


def _prefix_hint(diff: StateDiff, group_of: Mapping[str, Sequence[str]]) -> str:
    """When every missing key (or an alias of it) is present under one leading prefix, name the prefix."""
    if not diff.missing or not diff.unexpected:
        return ""
    key = diff.missing[0][0]
    prefixes = {name[: -len(key)] for name, _ in diff.unexpected if name.endswith("." + key)}
    unexpected = {name for name, _ in diff.unexpected}
    for prefix in sorted(prefixes):
        if all(any(prefix + alias in unexpected for alias in group_of.get(name, (name,)))
               for name, _ in diff.missing):
            return (f"the file's keys carry the prefix '{prefix}': load with prefix '{prefix}' "
                    "(in a world file: checkpoints.prefixes.<role>)")
    return ""


def state_shapes(module: nn.Module) -> dict[str, Shape]:
    return {key: tuple(value.shape) for key, value in module.state_dict(keep_vars=True).items()}


def check_module(module: nn.Module, found: Mapping[str, Sequence[int]]) -> StateDiff:
    """Compare file shapes with a module's state dict, shared-tensor aliases taken into account."""
    return compare_shapes(state_shapes(module), found, alias_groups(module))


def load_into(module: nn.Module, path_or_state: str | Path | Mapping[str, torch.Tensor],
              prefix: str | None = None) -> None:
    """Load weights strictly: any missing, unexpected or wrong-shaped key raises CheckpointError.

    A module on the meta device takes the file's tensors as its own (`assign=True`).
    """
    if isinstance(path_or_state, Mapping):
        source = "state dict"
        state = strip_prefix(path_or_state, prefix, source)
    else:
        source = str(path_or_state)
        state = read_state_dict(path_or_state, prefix)
    current = module.state_dict(keep_vars=True)
    groups = _alias_groups(current)
    diff = compare_shapes({key: tuple(value.shape) for key, value in current.items()},
                          {key: tuple(value.shape) for key, value in state.items()}, groups)
    if not diff.ok:
        raise CheckpointError(f"checkpoint {source} does not fit {type(module).__name__}: {diff.summary()}")
    for key, tensor in state.items():
        problem = value_problem(tensor, current[key])
        if problem:
            raise CheckpointError(f"checkpoint {source}: {key} {problem}")
    fill_aliases(state, groups)
    on_meta = any(value.device.type == "meta" for value in current.values())
    module.load_state_dict(state, strict=False, assign=on_meta)


def value_problem(tensor: torch.Tensor, expected: torch.Tensor) -> str | None:
    """What is wrong with a file's `tensor` for a network tensor like `expected` (None: nothing): integer or
    boolean data where the network has floating-point weights, NaN, infinite or implausibly large values."""
    if not expected.is_floating_point() or tensor.numel() == 0 or tensor.device.type == "meta":
        return None
    if not tensor.is_floating_point():
        return f"is {str(tensor.dtype).removeprefix('torch.')}, expected floating-point weights"
    low, high = (float(v) for v in torch.aminmax(tensor.detach()))
    if low >= -MAX_WEIGHT and high <= MAX_WEIGHT:
        return None
    if math.isnan(low) or math.isnan(high):
        return "holds NaN values"
    if math.isinf(low) or math.isinf(high):
        return "holds infinite values"
    return f"holds values up to {max(abs(low), abs(high)):.3g}, beyond +-{MAX_WEIGHT:g} (a corrupt file?)"


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")


_REFUSED = ((re.compile(r"GLOBAL ([\w.]+)"), "it references {}"),
            (re.compile(r"unrecognized function ([^\n]+?)(?: which belongs to|\.?$)", re.MULTILINE), "it calls {}"),
            (re.compile(r"but got (<class '[^']+'>|[\w.]+)"), "it builds {}"))


def _refusal_reason(exc: BaseException) -> str:
    """The object torch refused, in our words (torch's text suggests `weights_only=False`: never quoted)."""
    text = str(exc)
    for pattern, reason in _REFUSED:
        match = pattern.search(text)
        if match:
            return reason.format(match.group(1).strip())
    return "it holds Python objects other than tensors"


def _shape(shape: Sequence[int]) -> str:
    return str(tuple(int(n) for n in shape))


def _describe(entry: tuple) -> str:
    if isinstance(entry[1], str):
        return f"{entry[0]} {entry[1]}"
    if len(entry) == 3:
        return f"{entry[0]}: expected {_shape(entry[1])}, found {_shape(entry[2])}"
    return f"{entry[0]} {_shape(entry[1])}"


def _listing(names: Sequence[str], limit: int = LIST_LIMIT) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... {len(names) - limit} more" if len(names) > limit else "")
