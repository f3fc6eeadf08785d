"""ONNX export of every DIAMOND network (Atari: denoiser, reward/end model, actor-critic, through
`build_trt.py --onnx-only` on the atari world at fixture size; CS:GO: denoiser, upsampler) in its play
configuration (batch 1, static shapes), checked in onnxruntime against PyTorch and against the reference
outputs of the fixtures, one batch element at a time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

import build_trt
from engine.backends.export import export_all, run_onnx
from engine.backends.export_diamond import diamond_exports
from engine.backends.tensorrt import read_sidecar
from engine.checkpoints.verify import file_sha256
from engine.models.diamond_denoiser import Denoiser, DenoiserConfig
from tests.conftest import read_json
from tests.test_atari_world import tiny_world_config
from tests.test_diamond_models import assert_quantized_close

ATOL = 1e-4
ATARI = ("denoiser", "rew_end_model", "actor_critic")


def load(cls, config_cls, config: dict, state: dict, prefix: str):
    module = cls(config_cls.from_dict(config)).eval()
    module.load_from(state, prefix)
    return module


@pytest.fixture(scope="module")
def atari(diamond_dir: Path, tmp_path_factory) -> dict:
    """`build_trt.py --onnx-only` on the shipped atari world with the fixture agent's sizes and weights."""
    path = tmp_path_factory.mktemp("tiny-atari") / "tiny_atari.yaml"
    path.write_text(yaml.safe_dump(tiny_world_config(diamond_dir), sort_keys=False))
    out = tmp_path_factory.mktemp("engines")
    assert build_trt.main(["--config", str(path), "--out", str(out), "--onnx-only", "--atol", str(ATOL),
                           "--no-download"]) == 0
    folder = out / "tiny-atari"
    return {"folder": folder, "results": {name: read_sidecar(folder / f"{name}.json") for name in ATARI}}


@pytest.fixture(scope="module")
def csgo(diamond_dir: Path, tmp_path_factory) -> dict:
    cfg = read_json(diamond_dir / "csgo_agent.json")["agent_config"]
    state = load_file(diamond_dir / "csgo_agent.safetensors")
    networks = {name: load(Denoiser, DenoiserConfig, cfg[name], state, f"{name}.") for name in ("denoiser", "upsampler")}
    sizes = {"denoiser": load_file(diamond_dir / "csgo_denoise_io.safetensors")["noisy_next_obs"].shape[-2:],
             "upsampler": load_file(diamond_dir / "csgo_upsampler_denoise_io.safetensors")["noisy_next_obs"].shape[-2:]}
    folder = tmp_path_factory.mktemp("csgo_onnx")
    results = export_all(diamond_exports(networks, {k: tuple(v) for k, v in sizes.items()},
                                         sigma_cond={"denoiser": True, "upsampler": False}), folder, ATOL)
    return {"folder": folder, "results": results}


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
    assert set(csgo["results"]) == {"denoiser", "upsampler"}
    for result in csgo["results"].values():
        assert result["exporter"] == "dynamo" and result["max_abs_diff"] <= ATOL


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
