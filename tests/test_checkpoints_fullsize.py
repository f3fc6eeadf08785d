"""Full-size Oasis-500M checkpoints (random values, official key names and shapes from the fixture
manifests): the `minecraft` world's networks match them exactly, and `verify` checks 3.3 GB of files
from their headers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from engine.checkpoints.loading import alias_groups, state_shapes
from engine.core.config import load_world_config
from engine.core.networks import build_networks
from tests.conftest import PROJECT_ROOT, read_json

MANIFESTS = {"dit": "manifest_dit_s2.json", "vae": "manifest_vit_l_20.json"}
BLOCK = 1 << 20


@pytest.fixture(scope="module")
def manifests(oasis_dir) -> dict[str, dict]:
    return {role: read_json(oasis_dir / name) for role, name in MANIFESTS.items()}


def written_shapes(manifest: dict) -> dict[str, tuple[int, ...]]:
    """Key -> shape of what `safetensors.torch.save_model` writes for the reference network."""
    return {key: tuple(manifest["state_dict"][key]) for key in manifest["keys_written_by_safetensors_save_model"]}


def write_random_checkpoint(shapes: dict[str, tuple[int, ...]], path: Path, seed: int = 0) -> None:
    """float32 tensors tiled from a random block at random offsets: cheap, and no two tensors alike."""
    generator = torch.Generator().manual_seed(seed)
    block = torch.randn(2 * BLOCK, generator=generator)
    tensors = {}
    for key, shape in shapes.items():
        flat = torch.empty(shape).view(-1)
        start = int(torch.randint(BLOCK, (), generator=generator))
        whole, rest = divmod(flat.numel(), BLOCK)
        flat[: whole * BLOCK].view(whole, BLOCK).copy_(block[start:start + BLOCK].expand(whole, BLOCK))
        flat[whole * BLOCK:].copy_(block[start:start + rest])
        tensors[key] = flat.view(shape)
    save_file(tensors, str(path))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Iterator[Path]:
    """Holds 5.7 GB by the end of the module: removed then, not left to pytest's temp-dir rotation."""
    path = tmp_path_factory.mktemp("full-size")
    yield path
    shutil.rmtree(path)


@pytest.fixture(scope="module")
def full_size_files(manifests, folder) -> dict[str, Path]:
    paths = {role: folder / f"{role}.safetensors" for role in MANIFESTS}
    for role, path in paths.items():
        write_random_checkpoint(written_shapes(manifests[role]), path)
    return paths


def verify(*args: str | Path) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "engine.checkpoints", "verify", "minecraft", *map(str, args)],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_minecraft_networks_match_the_manifests(manifests):
    networks = build_networks(load_world_config("minecraft"), "meta")
    for role, manifest in manifests.items():
        expected = {key: tuple(shape) for key, shape in manifest["state_dict"].items()}
        assert state_shapes(networks[role]) == expected
        groups = alias_groups(networks[role])
        assert sorted(groups) == sorted(sorted(group) for group in manifest["shared_tensor_alias_groups"])
        not_written = {name for group in groups for name in sorted(group)[1:]}
        assert set(expected) - not_written == set(manifest["keys_written_by_safetensors_save_model"])


def test_verify_accepts_full_size_files(full_size_files, manifests):
    done = verify(*(f"{role}={path}" for role, path in full_size_files.items()))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for line, (role, path) in zip(lines, full_size_files.items(), strict=True):
        shapes = written_shapes(manifests[role])
        parameters = sum(torch.Size(shape).numel() for shape in shapes.values())
        assert line.startswith(f"ok: {path} ({len(shapes)} tensors, {parameters:,} parameters, sha256 ")


def test_verify_names_a_renamed_key_and_a_wrong_shape(manifests, folder):
    shapes = written_shapes(manifests["dit"])
    keys = list(shapes)
    renamed = next(key for key in keys if key.endswith(".weight") and len(shapes[key]) == 2)
    reshaped = next(key for key in reversed(keys) if len(shapes[key]) == 2 and key != renamed)
    new_name = renamed.replace(".weight", ".kernel")
    wrong = (shapes[reshaped][0] + 1, *shapes[reshaped][1:])
    broken = {new_name if key == renamed else key: wrong if key == reshaped else shape for key, shape in shapes.items()}
    path = folder / "dit-broken.safetensors"
    write_random_checkpoint(broken, path, seed=1)

    done = verify(f"dit={path}")
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{path} does not fit OasisDiT (role dit): 3 problems" in done.stdout
    assert f"  missing {renamed}: expected {shapes[renamed]}" in done.stdout
    assert f"  unexpected {new_name} {shapes[renamed]}" in done.stdout
    assert f"  wrong shape {reshaped}: expected {shapes[reshaped]}, found {wrong}" in done.stdout
