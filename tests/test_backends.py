"""`--backend` selection, the static-shape Oasis units in eager PyTorch, and the TensorRT load checks.

The compiled backend's parity runs in test_backends_compile.py; TensorRT itself cannot be installed on our
machines, so its engines are tested up to the sidecar checks and the one-line refusals.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine.backends import compiled
from engine.backends.base import Backend
from engine.backends.choose import make_backend
from engine.backends.compiled import CompileBackend
from engine.backends.tensorrt import write_sidecar
from engine.backends.trt_backend import engine_problem, refusal
from engine.core.loader import open_session
from engine.core.noise import ReplayNoise, SeededNoise
from engine.errors import EngineError
from engine.families.oasis.diffusion_forcing import CachedDiffusionForcing, generate
from engine.families.oasis.dit import OasisDiT
from engine.families.oasis.sampler import BackendDiffusionForcing
from engine.families.oasis.units import OasisUnits, pack_modulations, unpack_modulations
from tests.conftest import load_sampler_dit, read_json, settings_from
from tests.tiny_world import make_tiny_oasis_world

TOL = {"rtol": 1e-4, "atol": 1e-4}
CPU = torch.device("cpu")
HINT = "pip install .[trt] (needs an NVIDIA GPU and driver)"


@pytest.fixture(scope="module")
def spec(oasis_dir) -> dict:
    return read_json(oasis_dir / "sampler.json")


@pytest.fixture(scope="module")
def dit(oasis_dir, spec) -> OasisDiT:
    return load_sampler_dit(oasis_dir, spec)


def test_named_backends_and_their_labels() -> None:
    eager = make_backend("eager", CPU, torch.float32)
    assert type(eager) is Backend and eager.label == "eager" and eager.reason == ""
    compile_ = make_backend("compile", CPU, torch.float32)
    assert isinstance(compile_, CompileBackend) and compile_.label == "compile"
    assert compile_.describe() == "backend: compile on cpu, fp32"


def test_auto_on_cpu_names_what_it_skipped() -> None:
    backend = make_backend("auto", CPU, torch.float32, world="minecraft")
    assert type(backend) is Backend and backend.label == "eager"
    assert backend.reason.startswith("auto; compile: not chosen by auto on CPU")
    assert "\n" not in backend.describe()


@pytest.mark.parametrize("name, expected", [
    ("fast", "--backend fast: expected one of auto, eager, compile, trt"),
    ("trt", "--backend trt runs on a CUDA GPU, not on cpu (use --device cuda; TensorRT: "
            "pip install .[trt] (needs an NVIDIA GPU and driver))"),
])
def test_unavailable_backends_are_one_line_errors(name: str, expected: str) -> None:
    with pytest.raises(EngineError) as info:
        make_backend(name, CPU, torch.float32, world="minecraft")
    assert str(info.value) == expected


def test_trt_without_tensorrt_gives_the_install_hint(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(EngineError) as info:
        make_backend("trt", torch.device("cuda"), torch.bfloat16, world="minecraft")
    assert str(info.value) == f"TensorRT is not installed: {HINT}"


def test_compile_without_a_compiler_is_refused_by_name(monkeypatch) -> None:
    monkeypatch.setattr(compiled.shutil, "which", lambda name: None)
    with pytest.raises(EngineError, match=r"^--backend compile: torch.compile needs a C\+\+ compiler on CPU"):
        make_backend("compile", CPU, torch.float32)


def test_eager_backend_hands_calls_back_unchanged() -> None:
    backend = Backend(CPU, torch.float32)

    def fn(x):
        return x + 1

    assert backend.compile_step(fn, (torch.zeros(1),), "f") is fn
    backend.warm_up()  # nothing registered: no bar, no work


def test_modulations_pack_and_unpack(dit: OasisDiT) -> None:
    levels = torch.tensor([[3, 500]])
    actions = torch.rand((1, 2, dit.external_cond_dim))
    mods = dit.modulations(levels, actions)
    packed = pack_modulations(mods)
    width = dit.x_embedder.proj.out_channels
    assert packed.shape == (1, 2, 1, 1, (12 * dit.depth + 2) * width)
    again = unpack_modulations(packed, dit.depth)
    for (s, t), (s2, t2) in zip(mods.blocks, again.blocks, strict=True):
        assert all(torch.equal(a, b) for a, b in zip((*s, *t), (*s2, *t2), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(mods.final, again.final, strict=True))


@torch.no_grad()
def test_units_equal_forward_modulated_at_every_position(dit: OasisDiT, spec: dict) -> None:
    """The static-position step and context fill equal the eager cached calls at each window position."""
    window = spec["max_frames"]
    units = OasisUnits(dit, window)
    gen = torch.Generator().manual_seed(5)
    frame = (dit.in_channels, *(g * dit.patch_size for g in dit.grid))
    frames = torch.randn((1, window, *frame), generator=gen)
    actions = torch.rand((1, window, dit.external_cond_dim), generator=gen)
    context_levels = torch.full((1, window), 14)
    cache = dit.new_cache(1, window)
    static = dit.new_cache(1, window)
    for p in range(window - 1):
        dit.forward_cached(frames[:, p : p + 1], context_levels[:, :1], actions[:, p : p + 1], cache, p, keys_only=True)
        keys, values = units.context(frames[:, p : p + 1], context_levels[:, :1], actions[:, p : p + 1],
                                     static.keys, static.values, torch.tensor([p]))
        torch.testing.assert_close(keys[:, :, :, 0], cache.keys[:, :, :, p], **TOL)
        torch.testing.assert_close(static.values[:, :, :, : p + 1], cache.values[:, :, :, : p + 1], **TOL)
        mods = dit.modulations(torch.tensor([[700]]), actions[:, p + 1 : p + 2])
        expected = dit.forward_modulated(frames[:, p + 1 : p + 2], mods, cache, p + 1)
        got = units.step(frames[:, p + 1 : p + 2], pack_modulations(mods), static.keys.clone(), static.values.clone(),
                         torch.tensor([p + 1]))
        torch.testing.assert_close(got, expected, **TOL)
    keys, values = units.prefill(frames[:, : window - 1], context_levels[:, : window - 1], actions[:, : window - 1])
    torch.testing.assert_close(keys, cache.keys[:, :, :, : window - 1], **TOL)
    torch.testing.assert_close(values, cache.values[:, :, :, : window - 1], **TOL)


@torch.no_grad()
def test_eager_units_sampler_reproduces_the_reference_loop(dit: OasisDiT, spec: dict, oasis_dir: Path) -> None:
    io = load_file(oasis_dir / "sampler_io.safetensors")
    noise = ReplayNoise(io["noise"].transpose(0, 1))
    sampler = BackendDiffusionForcing(dit, settings_from(spec), noise, batch=spec["batch_size"])
    out = generate(sampler, io["prompt_latents"], io["actions"], spec["total_frames"])
    torch.testing.assert_close(out, io["out_latents"], **TOL)


@torch.no_grad()
def test_eager_units_sampler_equals_cached_past_the_window(dit: OasisDiT, spec: dict) -> None:
    settings = settings_from(spec)
    batch, frames = 2, 2 * settings.max_frames + 3
    gen = torch.Generator().manual_seed(7)
    prompt = torch.randn((batch, 3, dit.in_channels, *(g * dit.patch_size for g in dit.grid)), generator=gen)
    actions = (torch.rand((batch, frames, dit.external_cond_dim), generator=gen) > 0.7).float()
    expected = generate(CachedDiffusionForcing(dit, settings, SeededNoise(3), batch=batch), prompt, actions, frames)
    got = generate(BackendDiffusionForcing(dit, settings, SeededNoise(3), batch=batch), prompt, actions, frames)
    torch.testing.assert_close(got, expected, **TOL)


def make_engine(folder: Path, name: str, **fields) -> dict:
    sidecar = {"network": name, "role": "dit", "plan": f"{name}.plan", "checkpoint_sha256": "a" * 64,
               "precision": "bf16", "gpu": {"name": "NVIDIA H100", "compute_capability": "9.0"},
               "tensorrt_version": "10.3.0", "onnx_sha256": "b" * 64} | fields
    write_sidecar(folder / f"{name}.json", sidecar)
    if sidecar["plan"]:
        (folder / sidecar["plan"]).write_bytes(b"engine")
    return sidecar


def test_engine_checks_at_load_name_the_reason(tmp_path: Path) -> None:
    environment = {"gpu": {"name": "NVIDIA H100", "compute_capability": "9.0"}, "tensorrt_version": "10.3.0"}
    sha = {"dit": "a" * 64}
    make_engine(tmp_path, "dit_step")
    assert engine_problem(tmp_path, "dit_step", sha, "bf16", environment) is None
    assert engine_problem(tmp_path, "dit_prefill", sha, "bf16", environment) == f"no engine dit_prefill in {tmp_path}"
    cases = {
        "the source checkpoint changed": ({"dit": "c" * 64}, "bf16", environment),
        "the precision changed": (sha, "fp16", environment),
        "the GPU changed": (sha, "bf16", environment | {"gpu": {"name": "NVIDIA L4", "compute_capability": "8.9"}}),
        "the TensorRT version changed": (sha, "bf16", environment | {"tensorrt_version": "10.9.0"}),
    }
    for reason, (checkpoints, precision, env) in cases.items():
        problem = engine_problem(tmp_path, "dit_step", checkpoints, precision, env)
        assert problem is not None and problem.startswith(reason), problem
    (tmp_path / "dit_step.plan").unlink()
    assert engine_problem(tmp_path, "dit_step", sha, "bf16", environment) == "the engine file dit_step.plan is missing"
    make_engine(tmp_path, "vae_decoder", plan=None, role="vae")
    assert engine_problem(tmp_path, "vae_decoder", sha, "bf16", environment) == "no engine has been built yet"
    line = refusal("minecraft", "dit_step", "the GPU changed (NVIDIA H100 9.0 -> NVIDIA L4 8.9)", "bf16")
    assert line == ("--backend trt: engine dit_step for world minecraft cannot be used: the GPU changed "
                    "(NVIDIA H100 9.0 -> NVIDIA L4 8.9); rebuild with: python build_trt.py --world minecraft "
                    "--precision bf16")
    assert json.loads((tmp_path / "dit_step.json").read_text())["role"] == "dit"


def test_auto_session_names_its_backend_in_metadata_and_log(tmp_path: Path, oasis_dir: Path, capsys) -> None:
    world = make_tiny_oasis_world(tmp_path, oasis_dir)
    session = open_session(str(world), device="cpu", allow_download=False, extra={"backend": "auto"})
    assert session.metadata()["backend"] == "eager"
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out.strip().splitlines() == [
        "backend: eager on cpu, fp32 (auto; compile: not chosen by auto on CPU (its first warm-up takes minutes); "
        "ask for --backend compile)"]
