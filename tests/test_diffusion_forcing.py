"""Diffusion-forcing samplers against the open-oasis generate.py loop (fixtures/oasis/sampler_io)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from engine.core.noise import ReplayNoise, SeededNoise
from engine.families.oasis.diffusion_forcing import (
    CachedDiffusionForcing,
    ReferenceDiffusionForcing,
    generate,
)
from engine.families.oasis.dit import OasisDiT
from engine.families.oasis.schedules import alphas_cumprod, ddim_noise_levels
from tests.conftest import load_sampler_dit, read_json, settings_from

TOL = {"rtol": 1e-4, "atol": 1e-4}
SAMPLERS = [ReferenceDiffusionForcing, CachedDiffusionForcing]


@pytest.fixture(scope="module")
def spec(oasis_dir) -> dict:
    return read_json(oasis_dir / "sampler.json")


@pytest.fixture(scope="module")
def io(oasis_dir) -> dict[str, torch.Tensor]:
    return load_file(oasis_dir / "sampler_io.safetensors")


@pytest.fixture(scope="module")
def dit(oasis_dir, spec) -> OasisDiT:
    return load_sampler_dit(oasis_dir, spec)


def test_schedule_and_noise_levels(spec, io):
    torch.testing.assert_close(alphas_cumprod(spec["max_noise_level"]), io["alphas_cumprod"], rtol=0, atol=1e-7)
    levels = ddim_noise_levels(spec["ddim_steps"], spec["max_noise_level"])
    assert levels == spec["noise_levels"] == io["noise_levels"].tolist()


@pytest.mark.parametrize("sampler_cls", SAMPLERS)
@torch.no_grad()
def test_sampler_reproduces_reference_loop(dit, spec, io, sampler_cls):
    noise = ReplayNoise(io["noise"].transpose(0, 1))
    sampler = sampler_cls(dit, settings_from(spec), noise, batch=spec["batch_size"])
    out = generate(sampler, io["prompt_latents"], io["actions"], spec["total_frames"])
    torch.testing.assert_close(out, io["out_latents"], **TOL)
    prompt_frames = spec["n_prompt_frames"]
    assert torch.equal(out[:, :prompt_frames], io["prompt_latents"])
    assert noise.index == spec["total_frames"] - prompt_frames


@torch.no_grad()
def test_cached_equals_reference_long_past_the_window(dit, spec):
    settings = settings_from(spec)
    batch, frames = 2, 3 * settings.max_frames + 2
    gen = torch.Generator().manual_seed(7)
    c, (h, w) = dit.in_channels, (g * dit.patch_size for g in dit.grid)
    prompt = torch.randn((batch, 2, c, h, w), generator=gen)
    actions = (torch.rand((batch, frames, dit.external_cond_dim), generator=gen) > 0.7).float()
    outputs = [generate(cls(dit, settings, SeededNoise(3), batch=batch), prompt, actions, frames) for cls in SAMPLERS]
    torch.testing.assert_close(outputs[1], outputs[0], **TOL)
    assert outputs[0][:, -1].abs().max() > 0


@torch.no_grad()
def test_cached_sampler_reuses_context_until_the_window_slides(dit, spec):
    settings = settings_from(spec)
    sampler = CachedDiffusionForcing(dit, settings, SeededNoise(0), batch=1)
    c, (h, w) = dit.in_channels, (g * dit.patch_size for g in dit.grid)
    sampler.reset(torch.zeros((1, 1, c, h, w)))
    calls = []
    original = dit.forward_modulated

    def counting(x, *args, **kwargs):
        calls.append(x.shape[1])
        return original(x, *args, **kwargs)

    dit.forward_modulated = counting
    try:
        action = torch.zeros((1, dit.external_cond_dim))
        per_tick = []
        for _ in range(settings.max_frames + 2):
            calls.clear()
            sampler.step(action)
            per_tick.append(sum(calls))
    finally:
        del dit.forward_modulated
    steps, window = settings.ddim_steps, settings.max_frames
    assert per_tick[: window - 1] == [steps + 1] * (window - 1)
    assert per_tick[-1] == steps + window - 1
