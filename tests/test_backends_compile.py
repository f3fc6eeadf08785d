"""`--backend compile` passes the parity tests eager passes, on CPU (torch.compile's C++ code, no graphs),
and its tick stays on the device: no host transfers on CPU, no synchronisation on CUDA (skipped without a GPU).

torch.compile's first build of these graphs takes a while on a small CPU; inductor's on-disk cache makes
later runs quicker.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine.backends.compiled import CompileBackend
from engine.core.loader import open_session
from engine.core.noise import ReplayNoise, SeededNoise
from engine.families.diamond.denoiser import Denoiser, DenoiserConfig
from engine.families.oasis.diffusion_forcing import CachedDiffusionForcing, DiffusionForcingSettings, generate
from engine.families.oasis.dit import OasisDiT
from engine.families.oasis.sampler import BackendDiffusionForcing
from tests.conftest import read_json, record_host_transfers
from tests.diamond_pairs import assert_atari_ticks_agree, assert_csgo_ticks_agree, atari_pair
from tests.test_atari_world import write_tiny_world as write_tiny_atari_world
from tests.test_csgo_world import make_tiny_world as make_tiny_csgo_world
from tests.test_csgo_world import read_fixture as read_csgo_fixture
from tests.test_diamond_models import assert_quantized_close
from tests.tiny_world import make_tiny_oasis_world

TOL = {"rtol": 1e-4, "atol": 1e-4}
CPU = torch.device("cpu")
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(),
                               reason="needs a CUDA GPU (CUDA graphs and sync debug mode are CUDA-only)")


@pytest.fixture(scope="module")
def spec(oasis_dir) -> dict:
    return read_json(oasis_dir / "sampler.json")


def load_dit(oasis_dir: Path, spec: dict, device: str = "cpu", dtype: torch.dtype = torch.float32) -> OasisDiT:
    model = OasisDiT(**read_json(oasis_dir / spec["dit_config"])["kwargs"]).eval()
    model.load_state_dict(load_file(oasis_dir / "dit.safetensors"), strict=False)
    return model.to(device, dtype)


def settings_from(spec: dict) -> DiffusionForcingSettings:
    return DiffusionForcingSettings(
        ddim_steps=spec["ddim_steps"], stabilization_level=spec["stabilization_level"],
        noise_abs_max=spec["noise_abs_max"], max_noise_level=spec["max_noise_level"], max_frames=spec["max_frames"])


@pytest.fixture(scope="module")
def compiled_sampler(oasis_dir, spec) -> BackendDiffusionForcing:
    """One compiled sampler for the module (batch and window of the fixture), warmed up once."""
    dit = load_dit(oasis_dir, spec)
    backend = CompileBackend(torch.device("cpu"), torch.float32)
    sampler = BackendDiffusionForcing(dit, settings_from(spec), ReplayNoise(torch.zeros(1)), batch=spec["batch_size"],
                                      backend=backend)
    sampler.warm_up()
    return sampler


@torch.no_grad()
def test_compiled_sampler_reproduces_the_reference_loop(compiled_sampler, spec, oasis_dir) -> None:
    io = load_file(oasis_dir / "sampler_io.safetensors")
    compiled_sampler.noise = ReplayNoise(io["noise"].transpose(0, 1))
    out = generate(compiled_sampler, io["prompt_latents"], io["actions"], spec["total_frames"])
    torch.testing.assert_close(out, io["out_latents"], **TOL)
    assert torch.equal(out[:, : spec["n_prompt_frames"]], io["prompt_latents"])


@torch.no_grad()
def test_compiled_sampler_equals_cached_past_the_window(compiled_sampler, spec) -> None:
    dit, settings, batch = compiled_sampler.model, compiled_sampler.settings, compiled_sampler.batch
    frames = 2 * settings.max_frames + 3
    gen = torch.Generator().manual_seed(7)
    prompt = torch.randn((batch, 2, dit.in_channels, *(g * dit.patch_size for g in dit.grid)), generator=gen)
    actions = (torch.rand((batch, frames, dit.external_cond_dim), generator=gen) > 0.7).float()
    expected = generate(CachedDiffusionForcing(dit, settings, SeededNoise(3), batch=batch), prompt, actions, frames)
    compiled_sampler.noise = SeededNoise(3)
    torch.testing.assert_close(generate(compiled_sampler, prompt, actions, frames), expected, **TOL)


@torch.no_grad()
def test_compiled_tick_makes_no_host_transfer_calls(compiled_sampler, monkeypatch) -> None:
    dit, batch = compiled_sampler.model, compiled_sampler.batch
    compiled_sampler.noise = SeededNoise(0)
    compiled_sampler.reset(torch.zeros((batch, 1, dit.in_channels, *(g * dit.patch_size for g in dit.grid))))
    action = torch.zeros((batch, dit.external_cond_dim))
    compiled_sampler.step(action)
    calls = record_host_transfers(monkeypatch)
    for _ in range(compiled_sampler.settings.max_frames + 1):  # fills the window, slides, refills
        compiled_sampler.step(action)
    monkeypatch.undo()
    assert calls == []


def test_compiled_diamond_denoiser_passes_its_parity_test(diamond_dir: Path) -> None:
    meta = read_json(diamond_dir / "atari_agent.json")
    denoiser = Denoiser(DenoiserConfig.from_dict(meta["agent_config"]["denoiser"])).eval()
    denoiser.load_from(load_file(diamond_dir / "atari_agent.safetensors"), "denoiser.")
    io = load_file(diamond_dir / "atari_denoise_io.safetensors")
    inputs = (io["noisy_next_obs"], io["sigma"], io["obs"], io["act"])
    backend = CompileBackend(torch.device("cpu"), torch.float32)
    denoise = backend.compile_step(denoiser.denoise, inputs, "denoiser")
    backend.warm_up()
    assert_quantized_close(denoise(*inputs), io["denoised"])


@needs_gpu
@torch.no_grad()
def test_cuda_graph_tick_equals_eager_and_never_synchronises(oasis_dir, spec) -> None:
    dit = load_dit(oasis_dir, spec, "cuda")
    settings, batch = settings_from(spec), spec["batch_size"]
    backend = CompileBackend(torch.device("cuda"), torch.float32)
    sampler = BackendDiffusionForcing(dit, settings, SeededNoise(3, "cuda"), batch=batch, backend=backend)
    sampler.warm_up()
    assert backend.label == "compile+cudagraphs"
    frames = 2 * settings.max_frames + 3
    gen = torch.Generator().manual_seed(7)
    prompt = torch.randn((batch, 2, dit.in_channels, *(g * dit.patch_size for g in dit.grid)), generator=gen).cuda()
    actions = (torch.rand((batch, frames, dit.external_cond_dim), generator=gen) > 0.7).float().cuda()
    expected = generate(CachedDiffusionForcing(dit, settings, SeededNoise(3, "cuda"), batch=batch), prompt, actions,
                        frames)
    torch.testing.assert_close(generate(sampler, prompt, actions, frames), expected, **TOL)
    sampler.reset(prompt)
    sampler.step(actions[:, 0])
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i in range(settings.max_frames + 1):
            sampler.step(actions[:, i])
    finally:
        torch.cuda.set_sync_debug_mode("default")


@torch.no_grad()
def test_compiled_session_gives_the_eager_frames(tmp_path: Path, oasis_dir: Path, capsys) -> None:
    world = make_tiny_oasis_world(tmp_path, oasis_dir)
    sessions = {name: open_session(str(world), device="cpu", allow_download=False, extra={"backend": name})
                for name in ("eager", "compile")}
    captured = capsys.readouterr()
    assert captured.out.strip().splitlines() == ["backend: compile on cpu, fp32"]
    assert "warm-up (compile)" in captured.err and "vae_decoder" in captured.err  # the bar: never a silent pause
    assert sessions["compile"].metadata()["backend"] == "compile"
    action = torch.zeros(sessions["eager"].action_dim)
    action[11] = 1.0
    for _ in range(sessions["eager"].settings.max_frames + 2):  # fill, slide, refill
        frames = {name: session.step(action).frame.int() for name, session in sessions.items()}
        assert (frames["compile"] - frames["eager"]).abs().max() <= 1


def test_compiled_atari_ticks_equal_eager(diamond_dir: Path, tmp_path: Path) -> None:
    """Agent mode: the denoiser's U-Net, the reward/end model and the actor-critic run compiled."""
    sessions = atari_pair(write_tiny_atari_world(tmp_path, diamond_dir), diamond_dir,
                          CompileBackend(CPU, torch.float32))
    sessions[1].warm_up()
    assert_atari_ticks_agree(sessions)
    assert sessions[1].metadata()["backend"] == "compile"


def test_compiled_csgo_world_opens_and_ticks_as_eager(diamond_dir: Path, tmp_path: Path) -> None:
    world = make_tiny_csgo_world(tmp_path, diamond_dir, read_csgo_fixture(diamond_dir))
    sessions = [open_session(world, device="cpu", seed=5, extra={"backend": name}) for name in ("eager", "compile")]
    assert [s.metadata()["backend"] for s in sessions] == ["eager", "compile"]
    assert_csgo_ticks_agree(sessions)
