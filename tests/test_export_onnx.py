"""ONNX export of the Oasis networks at fixture size, onnxruntime parity, and `build_trt.py` up to
the TensorRT call (TensorRT is not installable on our machines, so these tests stop where it is needed)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import build_trt
from engine.backends import export
from engine.backends.export import check_onnx, export_onnx, run_onnx
from engine.backends.tensorrt import check_sidecar, read_sidecar
from engine.checkpoints.resolve import resolve_checkpoint_files
from engine.checkpoints.verify import file_sha256
from engine.core.config import load_world_config
from engine.core.loader import load_networks
from engine.core.noise import ReplayNoise
from engine.families.oasis.diffusion_forcing import CachedDiffusionForcing
from engine.families.oasis.exports import oasis_exports
from engine.families.oasis.units import pack_modulations
from engine.families.oasis.world import sampler_settings
from tests.tiny_world import make_tiny_oasis_world

NETWORKS = ("dit_prefill", "dit_append", "dit_step", "vae_decoder", "vae_encoder")
ATOL = 1e-4


@pytest.fixture(scope="module")
def world(tmp_path_factory, oasis_dir: Path) -> Path:
    return make_tiny_oasis_world(tmp_path_factory.mktemp("trt_world"), oasis_dir)


@pytest.fixture(scope="module")
def loaded(world: Path):
    cfg = load_world_config(world)
    files = resolve_checkpoint_files(cfg, allow_download=False)
    return cfg, files, load_networks(cfg, files, torch.device("cpu"), torch.float32)


@pytest.fixture(scope="module")
def onnx_dir(world: Path, tmp_path_factory) -> Path:
    """`build_trt.py --onnx-only` on the tiny world, run once for the module."""
    out = tmp_path_factory.mktemp("engines")
    code = build_trt.main(["--config", str(world), "--out", str(out), "--onnx-only", "--precision", "fp16",
                           "--atol", str(ATOL), "--no-download"])
    assert code == 0
    return out / "tiny-oasis"


def test_onnx_only_writes_onnx_files_and_sidecars(onnx_dir: Path, loaded) -> None:
    cfg, files, networks = loaded
    dit = networks["dit"]
    for name in NETWORKS:
        sidecar = read_sidecar(onnx_dir / f"{name}.json")
        assert sidecar is not None and (onnx_dir / f"{name}.onnx").is_file()
        role = name.split("_")[0]
        assert sidecar["role"] == role and sidecar["checkpoint_sha256"] == file_sha256(files[role])
        assert sidecar["onnx_sha256"] == file_sha256(onnx_dir / f"{name}.onnx")
        assert sidecar["precision"] == "fp16" and sidecar["exporter"] == "dynamo"
        assert sidecar["plan"] is None and sidecar["gpu"] is None and sidecar["tensorrt_version"] is None
        assert sidecar["onnx_max_abs_diff"] <= ATOL
    step = read_sidecar(onnx_dir / "dit_step.json")
    rows, cols = dit.grid
    window = cfg.sampler.max_frames
    cache_shape = [dit.depth, rows * cols, dit.heads, window, dit.head_dim]
    assert [i["name"] for i in step["inputs"]] == ["x", "mods", "keys", "values", "position"]
    assert step["inputs"][2]["shape"] == cache_shape and step["inputs"][4]["dtype"] == "int64"
    assert step["inputs"][1]["shape"][-1] == (12 * dit.depth + 2) * dit.x_embedder.proj.out_channels
    assert step["outputs"][0]["shape"] == [1, 1, dit.in_channels, rows * dit.patch_size, cols * dit.patch_size]
    prefill = read_sidecar(onnx_dir / "dit_prefill.json")
    context_shape = [*cache_shape[:3], window - 1, dit.head_dim]
    assert [o["shape"] for o in prefill["outputs"]] == [context_shape, context_shape]
    append = read_sidecar(onnx_dir / "dit_append.json")
    assert [o["shape"] for o in append["outputs"]] == [[*cache_shape[:3], 1, dit.head_dim]] * 2
    decoder = read_sidecar(onnx_dir / "vae_decoder.json")
    assert decoder["outputs"][0]["shape"] == [1, 3, cfg.networks.vae.input_height, cfg.networks.vae.input_width]


def test_every_network_matches_pytorch_on_fresh_inputs(onnx_dir: Path, loaded) -> None:
    _, _, networks = loaded
    specs = oasis_exports(networks["dit"], networks["vae"], seed=7, step_level=900)
    assert [s.name for s in specs] == list(NETWORKS)
    for spec in specs:
        assert check_onnx(onnx_dir / f"{spec.name}.onnx", spec.module, spec.inputs, ATOL) <= ATOL


def test_onnx_units_reproduce_the_cached_sampler(onnx_dir: Path, loaded) -> None:
    """A tick with a full window run through the ONNX graphs (prefill, then every denoising step) gives the
    eager sampler's frame, and filling the window frame by frame with `dit_append` gives the prefill's cache."""
    cfg, _, networks = loaded
    dit = networks["dit"]
    settings = sampler_settings(cfg)
    context = settings.max_frames - 1
    gen = torch.Generator().manual_seed(3)
    frame = (dit.in_channels, *(g * dit.patch_size for g in dit.grid))
    prompt = torch.randn((1, context, *frame), generator=gen)
    actions = torch.rand((1, context + 1, dit.external_cond_dim), generator=gen)
    noise = torch.randn((1, 1, *frame), generator=gen)
    sampler = CachedDiffusionForcing(dit, settings, ReplayNoise(noise))
    sampler.reset(prompt, actions[:, :context])
    with torch.no_grad():
        expected = sampler.step(actions[:, context])

    levels = torch.full((1, context), settings.context_level, dtype=torch.long)
    prefill_keys, prefill_values = run_onnx(onnx_dir / "dit_prefill.onnx", (prompt, levels, actions[:, :context]))
    cache_shape = (*prefill_keys.shape[:3], settings.max_frames, prefill_keys.shape[4])
    keys, values = torch.zeros(cache_shape), torch.zeros(cache_shape)
    for p in range(context):
        new_keys, new_values = run_onnx(onnx_dir / "dit_append.onnx", (
            prompt[:, p : p + 1], levels[:, :1], actions[:, p : p + 1], keys, values, torch.tensor([p])))
        keys[:, :, :, p : p + 1], values[:, :, :, p : p + 1] = torch.from_numpy(new_keys), torch.from_numpy(new_values)
    np.testing.assert_allclose(keys[:, :, :, :context].numpy(), prefill_keys, atol=ATOL, rtol=0)
    np.testing.assert_allclose(values[:, :, :, :context].numpy(), prefill_values, atol=ATOL, rtol=0)

    steps = settings.ddim_steps
    with torch.no_grad():
        mods = pack_modulations(dit.modulations(sampler.step_levels, actions[:, context:].expand(-1, steps, -1)))
    x = noise[0].clamp(-settings.noise_abs_max, settings.noise_abs_max)[:, None]
    for k in range(steps, 0, -1):
        sqrt_a, sqrt_1ma, sqrt_inv_a, sqrt_inv_am1, sqrt_a_next, sqrt_1ma_next = sampler.coefficients[k]
        (v,) = run_onnx(onnx_dir / "dit_step.onnx", (x, mods[:, k - 1 : k], keys, values, torch.tensor([context])))
        x0 = sqrt_a * x - sqrt_1ma * torch.from_numpy(v)
        eps = (sqrt_inv_a * x - x0) / sqrt_inv_am1
        x = sqrt_a_next * x0 + sqrt_1ma_next * eps
    np.testing.assert_allclose(x[:, 0].numpy(), expected.numpy(), atol=ATOL, rtol=0)


def test_build_stops_at_tensorrt_with_a_one_line_error(world: Path, tmp_path: Path, monkeypatch,
                                                       capsys) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # absent even where someone installed it
    code = build_trt.main(["--config", str(world), "--out", str(tmp_path), "--no-download"])
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert code == 2
    assert err[-1] == "error: TensorRT is not installed: pip install .[trt] (needs an NVIDIA GPU and driver)"
    assert not [line for line in err if line.startswith("Traceback")]
    folder = tmp_path / "tiny-oasis"
    assert {p.name for p in folder.glob("*.onnx")} == {f"{n}.onnx" for n in NETWORKS}
    for name in NETWORKS:  # the sidecars and the cache decision come before the TensorRT call
        assert read_sidecar(folder / f"{name}.json")["plan"] is None
        assert f"{name}: engine to build: no engine has been built yet" in captured.out


@pytest.mark.parametrize("argv, expected", [
    (["--world", "no-such-world"], "error: unknown world 'no-such-world'"),
    (["--world", "minecraft", "--weights", "dit"], "error: --weights dit: expected ROLE=PATH"),
])
def test_cli_errors_are_one_line(argv: list[str], expected: str, capsys) -> None:
    assert build_trt.main([*argv, "--no-download"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(expected)


def test_sidecar_decides_reuse_or_names_the_reason(onnx_dir: Path) -> None:
    current = read_sidecar(onnx_dir / "dit_step.json") | {
        "gpu": {"name": "NVIDIA H100", "compute_capability": "9.0"}, "tensorrt_version": "10.3.0"}
    built = current | {"plan": "dit_step.plan"}
    assert check_sidecar(built, current) is None
    assert check_sidecar(None, current) == "no engine has been built yet"
    assert check_sidecar(current | {"plan": None}, current) == "no engine has been built yet"
    changes = {
        "checkpoint_sha256": ("0" * 64, "the source checkpoint changed"),
        "gpu": ({"name": "NVIDIA RTX 4090", "compute_capability": "8.9"}, "the GPU changed"),
        "tensorrt_version": ("10.9.0", "the TensorRT version changed"),
        "precision": ("bf16", "the precision changed"),
        "onnx_sha256": ("f" * 64, "the exported ONNX graph changed"),
    }
    for key, (value, reason) in changes.items():
        message = check_sidecar(built, current | {key: value})
        assert message is not None and message.startswith(reason) and "\n" not in message
    # Fields not known yet (GPU and TensorRT before TensorRT is probed) are not compared.
    assert check_sidecar(built, current | {"gpu": None, "tensorrt_version": None}) is None


def test_export_falls_back_to_torchscript_when_torch_export_fails(loaded, tmp_path: Path, monkeypatch) -> None:
    _, _, networks = loaded
    spec = oasis_exports(networks["dit"], networks["vae"])[3]
    assert spec.name == "vae_decoder"
    real_export = torch.onnx.export

    def dynamo_fails(*args, dynamo: bool = True, **kwargs):
        if dynamo:
            raise RuntimeError("unsupported operator")
        return real_export(*args, dynamo=False, **kwargs)

    monkeypatch.setattr(export.torch.onnx, "export", dynamo_fails)
    path = tmp_path / f"{spec.name}.onnx"
    assert export_onnx(spec.module, spec.inputs, path, spec.input_names, spec.output_names) == "torchscript"
    assert check_onnx(path, spec.module, spec.inputs, ATOL) <= ATOL
