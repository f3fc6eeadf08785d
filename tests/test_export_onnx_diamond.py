"""ONNX export of every DIAMOND network (Atari: denoiser, reward/end model, actor-critic, through
`build_trt.py --onnx-only` on the atari world at fixture size; CS:GO: denoiser, upsampler) in its play
configuration (batch 1, static shapes), checked in onnxruntime against PyTorch and against the reference
outputs of the fixtures, one batch element at a time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import build_trt
from engine.backends.export import run_onnx
from engine.backends.tensorrt import read_sidecar
from engine.checkpoints.verify import file_sha256
from engine.core.config import load_world_config
from engine.core.loader import load_networks
from engine.families.diamond.csgo import CsgoSession
from engine.families.diamond.csgo_spawn import spawn_point_dirs
from tests.conftest import read_json
from tests.diamond_pairs import assert_atari_ticks_agree, assert_csgo_ticks_agree, atari_pair
from tests.onnx_units import OnnxUnitsBackend
from tests.test_atari_world import write_tiny_world as write_tiny_atari_world
from tests.test_csgo_world import make_tiny_world as make_tiny_csgo_world
from tests.test_csgo_world import read_fixture as read_csgo_fixture
from tests.test_diamond_models import assert_quantized_close

ATOL = 1e-4
CPU = torch.device("cpu")
ATARI = ("denoiser", "rew_end_model", "actor_critic")
CSGO = ("denoiser", "upsampler")


@pytest.fixture(scope="module")
def atari(diamond_dir: Path, tmp_path_factory) -> dict:
    """`build_trt.py --onnx-only` on the shipped atari world with the fixture agent's sizes and weights."""
    return onnx_only(write_tiny_atari_world(tmp_path_factory.mktemp("tiny-atari"), diamond_dir),
                     tmp_path_factory.mktemp("engines"), ATARI)


@pytest.fixture(scope="module")
def csgo(diamond_dir: Path, tmp_path_factory) -> dict:
    """`build_trt.py --onnx-only` on a csgo world of fixture size (its first preset: s_cond on the denoiser only)."""
    path = make_tiny_csgo_world(tmp_path_factory.mktemp("tiny-csgo"), diamond_dir, read_csgo_fixture(diamond_dir))
    return onnx_only(path, tmp_path_factory.mktemp("engines"), CSGO)


def onnx_only(world: Path, out: Path, networks: tuple[str, ...]) -> dict:
    """`build_trt.py --onnx-only` on the world file: its ONNX folder, the world file, each network's sidecar."""
    assert build_trt.main(["--config", str(world), "--out", str(out), "--onnx-only", "--atol", str(ATOL),
                           "--no-download"]) == 0
    folder = out / str(load_world_config(world).name)
    return {"folder": folder, "config": world,
            "results": {name: read_sidecar(folder / f"{name}.json") for name in networks}}


def test_build_trt_exports_every_atari_network_with_its_sidecar(atari: dict, diamond_dir: Path) -> None:
    sha = file_sha256(diamond_dir / "atari_agent.safetensors")
    for name, sidecar in atari["results"].items():
        assert sidecar is not None and (atari["folder"] / f"{name}.onnx").is_file()
        assert sidecar["exporter"] == "dynamo" and sidecar["onnx_max_abs_diff"] <= ATOL
        assert sidecar["role"] == name and sidecar["checkpoint_sha256"] == sha and sidecar["plan"] is None
    denoiser = atari["results"]["denoiser"]
    assert [i["name"] for i in denoiser["inputs"]] == ["noisy", "sigma", "obs", "act"]
    size = read_json(diamond_dir / "atari_agent.json")["img_size"]
    assert denoiser["inputs"][0]["shape"] == [1, 3, size, size] and denoiser["inputs"][1]["shape"] == []
    assert denoiser["inputs"][3]["dtype"] == "int64"


def test_every_csgo_network_exports_with_torch_export_and_matches_pytorch(csgo: dict) -> None:
    for name, sidecar in csgo["results"].items():
        assert sidecar["exporter"] == "dynamo" and sidecar["onnx_max_abs_diff"] <= ATOL
        assert [i["name"] for i in sidecar["inputs"]][-1] == ("sigma_cond" if name == "denoiser" else "obs")


def test_atari_denoiser_onnx_reproduces_the_fixture(atari: dict, diamond_dir: Path) -> None:
    io = load_file(diamond_dir / "atari_denoise_io.safetensors")
    for b in range(io["sigma"].shape[0]):
        (out,) = run_onnx(atari["folder"] / "denoiser.onnx", (io["noisy_next_obs"][b : b + 1], io["sigma"][b],
                                                               io["obs"][b : b + 1], io["act"][b : b + 1]))
        assert_quantized_close(torch.from_numpy(out), io["denoised"][b : b + 1])


def test_atari_reward_end_and_actor_critic_onnx_reproduce_the_fixtures(atari: dict, diamond_dir: Path) -> None:
    io = load_file(diamond_dir / "atari_rew_end_io.safetensors")
    for b in range(io["step.obs"].shape[0]):
        rew, end, hx, cx = run_onnx(atari["folder"] / "rew_end_model.onnx", (
            io["step.obs"][b : b + 1], io["step.act"][b : b + 1], io["step.next_obs"][b : b + 1],
            io["burnin.hx"][:, b : b + 1], io["burnin.cx"][:, b : b + 1]))
        for got, key in ((rew, "step.logits_rew"), (end, "step.logits_end")):
            np.testing.assert_allclose(got, io[key][b : b + 1].numpy(), atol=1e-5, rtol=1e-5)
        for got, key in ((hx, "step.hx"), (cx, "step.cx")):
            np.testing.assert_allclose(got, io[key][:, b : b + 1].numpy(), atol=1e-5, rtol=1e-5)
    io = load_file(diamond_dir / "atari_actor_critic_io.safetensors")
    for b in range(io["obs"].shape[0]):
        hx, cx = io["hx0"][b : b + 1], io["cx0"][b : b + 1]
        for t in range(io["obs"].shape[1]):
            logits, value, hx, cx = run_onnx(atari["folder"] / "actor_critic.onnx", (io["obs"][b : b + 1, t], hx, cx))
            np.testing.assert_allclose(logits, io["logits_act"][b : b + 1, t].numpy(), atol=1e-5, rtol=1e-5)
            np.testing.assert_allclose(value, io["val"][b : b + 1, t].numpy(), atol=1e-5, rtol=1e-5)
            np.testing.assert_allclose(hx, io["hx"][b : b + 1, t].numpy(), atol=1e-5, rtol=1e-5)
            hx, cx = torch.from_numpy(hx), torch.from_numpy(cx)


def test_csgo_denoiser_and_upsampler_onnx_reproduce_the_fixtures(csgo: dict, diamond_dir: Path) -> None:
    io = load_file(diamond_dir / "csgo_denoise_io.safetensors")
    for b in range(io["sigma"].shape[0]):
        (out,) = run_onnx(csgo["folder"] / "denoiser.onnx", (
            io["noisy_next_obs"][b : b + 1], io["sigma"][b], io["obs"][b : b + 1], io["act"][b : b + 1].float(),
            io["sigma_cond"][b : b + 1]))
        assert_quantized_close(torch.from_numpy(out), io["cond.denoised"][b : b + 1])
    io = load_file(diamond_dir / "csgo_upsampler_denoise_io.safetensors")
    for b in range(io["sigma"].shape[0]):
        (out,) = run_onnx(csgo["folder"] / "upsampler.onnx", (io["noisy_next_obs"][b : b + 1], io["sigma"][b],
                                                              io["obs"][b : b + 1]))
        assert_quantized_close(torch.from_numpy(out), io["denoised"][b : b + 1])


# -- the worlds' ticks on the exported units (what `--backend trt` runs, here in onnxruntime) ----------------


def test_atari_ticks_run_on_the_exported_units(atari: dict, diamond_dir: Path) -> None:
    """Agent mode calls all three units; the frames, rewards and ends equal the eager session's."""
    backend = OnnxUnitsBackend(atari["folder"])
    sessions = atari_pair(atari["config"], diamond_dir, backend)
    assert sorted(backend.units) == sorted(ATARI)
    assert_atari_ticks_agree(sessions)
    assert sessions[1].metadata()["backend"] == OnnxUnitsBackend.name


def test_csgo_ticks_run_on_the_exported_units(csgo: dict) -> None:
    cfg = load_world_config(csgo["config"])
    networks = load_networks(cfg, {role: Path(cfg.checkpoints.files[role]) for role in CSGO}, CPU, torch.float32)
    spawn_dirs = spawn_point_dirs(csgo["config"].parent / "spawn")
    backend = OnnxUnitsBackend(csgo["folder"])
    sessions = [CsgoSession(cfg, networks["denoiser"], networks["upsampler"], spawn_dirs, seed=5, backend=b)
                for b in (None, backend)]
    assert backend.units == list(CSGO)
    for session in sessions:
        session.reset()
    assert_csgo_ticks_agree(sessions)
