"""`python -m engine.checkpoints verify|convert|sha256` on fixture-size files, and the functions behind them."""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from engine.checkpoints.__main__ import main
from engine.checkpoints.loading import load_into
from engine.checkpoints.verify import convert_to_safetensors, file_sha256, file_shapes
from engine.errors import CheckpointError
from tests.conftest import PROJECT_ROOT, read_json
from tests.test_checkpoints_loading import Exploding, TiedPair

ROLES = ("dit", "vae")


@pytest.fixture
def cli(capsys):
    """Run the command line in this process; returns (exit code, stdout, stderr)."""

    def run(*args: str | Path) -> subprocess.CompletedProcess:
        capsys.readouterr()
        code = main([str(arg) for arg in args])
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    return run


@pytest.fixture(scope="module")
def fixture_world(oasis_dir, tmp_path_factory) -> Path:
    """A world of fixture-size networks whose files are the fixture checkpoints, named by relative paths."""
    folder = tmp_path_factory.mktemp("fixture-world")
    (folder / "weights").mkdir()
    for role in ROLES:
        (folder / "weights" / f"{role}.safetensors").symlink_to(oasis_dir / f"{role}.safetensors")
    config = {"name": "fixture-world", "family": "oasis",
              "checkpoints": {"repo": "test-org/none",
                              "files": {role: f"./weights/{role}.safetensors" for role in ROLES}},
              "networks": {role: read_json(oasis_dir / f"{role}.json")["kwargs"] for role in ROLES},
              "sampler": {"ddim_steps": 2}}
    path = folder / "world.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def stats(path: Path) -> tuple[int, int]:
    with safe_open(path, framework="pt") as handle:
        shapes = [handle.get_slice(key).get_shape() for key in handle.keys()]  # noqa: SIM118 (not iterable)
    return len(shapes), sum(math.prod(shape) for shape in shapes)


def test_verify_reports_ok_with_counts_and_sha256(fixture_world, oasis_dir):
    """Through `python -m` in a fresh process, the way users run it."""
    env = os.environ | {"PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "engine.checkpoints", "verify", str(fixture_world)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == len(ROLES)
    for line, role in zip(lines, ROLES, strict=True):
        path = fixture_world.parent / "weights" / f"{role}.safetensors"
        tensors, parameters = stats(path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert line == f"ok: {path} ({tensors} tensors, {parameters:,} parameters, sha256 {digest})"


def test_verify_takes_role_and_bare_paths(cli, fixture_world, oasis_dir):
    vae, dit = oasis_dir / "vae.safetensors", oasis_dir / "dit.safetensors"
    named = cli("verify", fixture_world, f"vae={vae}")
    assert named.returncode == 0 and named.stdout.startswith(f"ok: {vae} (") and len(named.stdout.splitlines()) == 1
    bare = cli("verify", fixture_world, dit, vae)
    assert bare.returncode == 0, bare.stdout + bare.stderr
    assert [line.split(" (")[0] for line in bare.stdout.splitlines()] == [f"ok: {dit}", f"ok: {vae}"]


def test_verify_lists_each_problem_of_a_swapped_file(cli, fixture_world, oasis_dir):
    done = cli("verify", fixture_world, f"vae={oasis_dir / 'dit.safetensors'}")
    assert done.returncode == 1
    head, *items = done.stdout.splitlines()
    assert head.startswith(f"{oasis_dir / 'dit.safetensors'} does not fit OasisVAE (role vae)")
    dit_keys = set(load_file(oasis_dir / "dit.safetensors"))
    vae_keys = set(load_file(oasis_dir / "vae.safetensors"))
    assert len(items) == len(dit_keys) + len(vae_keys)
    assert {item.split()[1] for item in items if item.startswith("  unexpected")} == dit_keys
    assert {item.split()[1].rstrip(":") for item in items if item.startswith("  missing")} == vae_keys


def test_verify_errors_are_one_line(cli, fixture_world, tmp_path):
    for args, expected in (((fixture_world, "dti=x.safetensors"), "unknown role 'dti'"),
                           (("no-such-world",), "unknown world 'no-such-world'"),
                           ((fixture_world, tmp_path / "absent.safetensors"), "absent.safetensors does not exist")):
        done = cli("verify", *args)
        assert done.returncode == 2
        assert done.stderr.count("\n") == 1 and expected in done.stderr, done.stderr


def test_file_sha256_reads_in_chunks(cli, tmp_path):
    data = os.urandom(10_000)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert file_sha256(path, chunk_bytes=333) == hashlib.sha256(data).hexdigest()
    done = cli("sha256", path)
    assert done.returncode == 0 and done.stdout == f"{hashlib.sha256(data).hexdigest()}  {path}\n"


def test_convert_round_trips_and_stores_shared_tensors_once(tmp_path):
    source = TiedPair()
    state = source.state_dict() | {"transposed": torch.arange(6.0).reshape(2, 3).t(), "count": torch.tensor(7)}
    pt = tmp_path / "model.pt"
    torch.save(state, pt)
    target, dropped = convert_to_safetensors(pt)
    assert target == tmp_path / "model.safetensors"
    assert dropped == {"second.weight": "first.weight"}
    written = load_file(target)
    assert set(written) == set(state) - {"second.weight"}
    for key, value in written.items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    assert file_shapes(pt) == {key: tuple(value.shape) for key, value in state.items()}
    module = TiedPair()
    load_into(module, {key: value for key, value in written.items() if key in module.state_dict()})
    torch.testing.assert_close(module.second.weight, source.first.weight, rtol=0, atol=0)


def test_convert_cli_writes_and_refuses(cli, tmp_path):
    pt = tmp_path / "plain.pth"
    torch.save({"w": torch.randn(3, 2), "b": torch.zeros(3)}, pt)
    out = tmp_path / "out" / "plain.safetensors"
    done = cli("convert", pt, out)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"wrote {out} (sha256 {file_sha256(out)})"
    again = cli("convert", pt, out)
    assert again.returncode == 2 and "--force" in again.stderr

    unsafe = tmp_path / "unsafe.pt"
    marker = tmp_path / "marker"
    torch.save({"w": torch.zeros(1), "obj": Exploding(marker)}, unsafe)
    refused = cli("convert", unsafe)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "Exploding" in refused.stderr and str(unsafe) in refused.stderr
    assert not marker.exists() and not unsafe.with_suffix(".safetensors").exists()


def test_convert_rejects_safetensors_input(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(1)}, str(path))
    with pytest.raises(CheckpointError, match=r"convert reads \.pt"):
        convert_to_safetensors(path)


@pytest.mark.parametrize(("change", "problem"), [
    (lambda t: torch.full_like(t, float("nan")), "holds NaN values"),
    (lambda t: torch.full_like(t, 1e30), "holds values up to 1e+30, beyond +-1e+06"),
    (lambda t: t.to(torch.int32), "is int32, expected floating-point weights"),
    (lambda t: t.to(torch.bool), "is bool, expected floating-point weights")])
def test_verify_reports_weights_that_are_not_usable(cli, fixture_world, oasis_dir, tmp_path, change, problem):
    state = load_file(oasis_dir / "vae.safetensors")
    key = next(k for k, v in state.items() if v.dim() == 2)
    save_file(state | {key: change(state[key]).contiguous()}, str(tmp_path / "vae.safetensors"))
    done = cli("verify", fixture_world, f"vae={tmp_path / 'vae.safetensors'}", f"dit={oasis_dir / 'dit.safetensors'}")
    assert done.returncode == 1 and f"bad values {key}: {problem}" in done.stdout, done.stdout


def test_verify_atari_takes_the_game_from_the_file_name(cli, diamond_dir, tmp_path):
    """DIAMOND names its checkpoints atari_100k/models/<Game>.pt: the game's action count sizes the networks.
    The file is named after a game with the fixture agent's number of actions, the world plays one with another."""
    from engine.actions.atari import GAME_ACTIONS
    from tests.test_atari_world import tiny_world_config

    actions = read_json(diamond_dir / "atari_agent.json")["num_actions"]
    fitting = [game for game, names in GAME_ACTIONS.items() if len(names) == actions]
    other = next(game for game, names in GAME_ACTIONS.items() if len(names) != actions)
    world = tiny_world_config(diamond_dir, weights="atari_100k/models/${game}.pt") | {"game": other}
    path = tmp_path / "tiny_atari.yaml"
    path.write_text(yaml.safe_dump(world, sort_keys=False))
    checkpoint = tmp_path / f"{fitting[-1]}.pt"
    torch.save(load_file(diamond_dir / "atari_agent.safetensors"), checkpoint)
    named = cli("verify", path, checkpoint)
    assert named.returncode == 0 and f"game={fitting[-1]}" in named.stdout and named.stdout.count("ok: ") == 3, \
        named.stdout
    chosen = cli("verify", path, checkpoint, "--game", fitting[0])  # the same action count, named by --game
    assert chosen.returncode == 0 and "game=" not in chosen.stdout, chosen.stdout
    wrong = cli("verify", path, checkpoint, "--game", other)
    assert wrong.returncode == 1 and "wrong shape" in wrong.stdout
