"""Checking weight files against a world's networks without loading them, hashing, and converting
`.pt` pickles to safetensors.

Networks are built on the meta device and safetensors files are read through their header, so a
multi-gigabyte checkpoint is checked in about the time it takes to hash it.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from engine.checkpoints.loading import (
    Shape,
    StateDiff,
    check_module,
    checkpoint_format,
    load_pickle,
    read_state_dict,
    strip_prefix,
    tensor_mapping,
    value_problem,
    view_identity,
)
from engine.errors import CheckpointError, first_line

CHUNK_BYTES = 1 << 24


def file_sha256(path: str | Path, chunk_bytes: int = CHUNK_BYTES) -> str:
    """Hex sha256 of a file, read in chunks so large checkpoints never sit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def files_sha256(files: Mapping[str, str | Path]) -> dict[str, str]:
    """{role: sha256} of a world's checkpoint files, for recordings and engine sidecars."""
    return {role: file_sha256(path) for role, path in files.items()}


def file_shapes(path: str | Path, prefix: str | None = None) -> dict[str, Shape]:
    """Key -> shape of every tensor in a checkpoint, without reading the tensor data.

    safetensors: from the header; pickles: a memory-mapped `weights_only` load.
    """
    path = Path(path)
    if checkpoint_format(path) == "pickle":
        state = tensor_mapping(load_pickle(path, mmap=True), path)
        return {key: tuple(value.shape) for key, value in strip_prefix(state, prefix, path).items()}
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with safe_open(path, framework="pt") as handle:
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118 (not iterable)
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"checkpoint {path} is not a readable safetensors file: {first_line(exc)}") from None
    if not prefix:
        return shapes
    return {key: tuple(shape) for key, shape in strip_prefix(shapes, prefix, path).items()}


@dataclass
class FileReport:
    """Outcome of checking one file against one network."""

    role: str
    path: Path
    network: str
    diff: StateDiff
    tensors: int
    parameters: int
    sha256: str = ""

    @property
    def ok(self) -> bool:
        return self.diff.ok

    def lines(self) -> list[str]:
        if self.ok:
            return [f"ok: {self.path} ({self.tensors} tensors, {self.parameters:,} parameters, sha256 {self.sha256})"]
        items = self.diff.items()
        count = f"{len(items)} problem" + ("s" if len(items) != 1 else "")
        head = f"{self.path} does not fit {self.network} (role {self.role}): {count}"
        return [head] + [f"  {item}" for item in items] + ([f"  hint: {self.diff.hint}"] if self.diff.hint else [])


def verify_file(module: nn.Module, path: str | Path, role: str = "", prefix: str | None = None,
                ignored: tuple[str, ...] = ()) -> FileReport:
    """Keys and shapes of `path` against `module` (any device, meta included); hashes the file when it fits.

    Keys starting with an `ignored` prefix belong to other networks (e.g. the VAE inside a WorldMAR trainer
    checkpoint) and are left out of the comparison."""
    path = Path(path)
    shapes = {key: shape for key, shape in file_shapes(path, prefix).items() if not key.startswith(ignored)}
    report = FileReport(role=role, path=path, network=type(module).__name__, diff=check_module(module, shapes),
                        tensors=len(shapes), parameters=sum(math.prod(shape) for shape in shapes.values()))
    if report.ok:
        report.diff.bad_values = value_problems(module, path, prefix, ignored)
    if report.ok:
        report.sha256 = file_sha256(path)
    return report


def value_problems(module: nn.Module, path: Path, prefix: str | None = None,
                   ignored: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """(key, problem) for each tensor of the file whose dtype or values cannot be the network's weights
    (`value_problem`: integers for floats, NaN, infinities, implausible magnitudes); one tensor in memory at a time."""
    expected = module.state_dict(keep_vars=True)
    problems = []
    for key, tensor in file_tensors(path, prefix):
        if key in expected and not key.startswith(ignored):
            problem = value_problem(tensor, expected[key])
            if problem:
                problems.append((key, problem))
    return problems


def file_tensors(path: Path, prefix: str | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """(key without `prefix`, tensor) of a checkpoint, keys outside `prefix` skipped; safetensors one at a time."""
    if checkpoint_format(path) == "pickle":
        yield from strip_prefix(tensor_mapping(load_pickle(path, mmap=True), path), prefix, path).items()
        return
    try:
        with safe_open(path, framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (not iterable)
                if not prefix or key.startswith(prefix):
                    yield key[len(prefix or ""):], handle.get_tensor(key)
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"checkpoint {path} is not a readable safetensors file: {first_line(exc)}") from None


def verify_files(networks: Mapping[str, nn.Module], files: Mapping[str, str | Path],
                 prefixes: Mapping[str, str | None] | None = None, ignored: Mapping[str, tuple[str, ...]] | None = None,
                 owner: str = "the networks") -> list[FileReport]:
    """Check each {role: file} against `networks[role]` (any device, meta included), with the role's key prefix
    inside its file and the prefixes of other networks' tensors to leave out."""
    prefixes, ignored = prefixes or {}, ignored or {}
    unknown = sorted(set(files) - set(networks))
    if unknown:
        raise CheckpointError(f"{owner} has no network for role {', '.join(unknown)}: its roles are "
                              f"{', '.join(networks)}")
    absent = [str(path) for path in files.values() if not Path(path).is_file()]
    if absent:
        raise CheckpointError(f"checkpoint {', '.join(absent)} does not exist")
    return [verify_file(networks[role], path, role, prefixes.get(role), ignored.get(role, ()))
            for role, path in files.items()]


def deduplicate_shared(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors safetensors can write, and {dropped name: kept name} for names of one shared tensor.

    As `safetensors.torch.save_model` does, of several names viewing the same memory the
    alphabetically first is kept; distinct views of one storage are cloned apart.
    """
    by_storage: dict[object, list[str]] = defaultdict(list)
    for name, tensor in state.items():
        key = id(tensor) if tensor.numel() == 0 else (tensor.device, tensor.untyped_storage().data_ptr())
        by_storage[key].append(name)
    tensors: dict[str, torch.Tensor] = {}
    dropped: dict[str, str] = {}
    for names in by_storage.values():
        if len(names) == 1:
            tensors[names[0]] = state[names[0]].contiguous()
            continue
        views: dict[object, list[str]] = defaultdict(list)
        for name in sorted(names):
            views[view_identity(state[name])].append(name)
        for same in views.values():
            tensors[same[0]] = state[same[0]].clone(memory_format=torch.contiguous_format)
            dropped |= dict.fromkeys(same[1:], same[0])
    return tensors, dropped


def convert_to_safetensors(source: str | Path, target: str | Path | None = None,
                           prefix: str | None = None) -> tuple[Path, dict[str, str]]:
    """Write the tensors of a `.pt/.pth/.ckpt` file as safetensors; returns (target, dropped aliases)."""
    source = Path(source)
    if checkpoint_format(source) != "pickle":
        raise CheckpointError(f"convert reads .pt/.pth/.ckpt/.bin files, {source} is {source.suffix}")
    target = Path(target) if target else source.with_suffix(".safetensors")
    tensors, dropped = deduplicate_shared(read_state_dict(source, prefix))
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(target), metadata={"format": "pt", "converted_from": source.name})
    return target, dropped
