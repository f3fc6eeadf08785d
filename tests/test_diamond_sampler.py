"""EDM sampler (plain and fast) against the reference fixtures, with every random draw replayed.

Sampler arithmetic is tested by replaying the recorded denoiser outputs (atol 1e-5); the end-to-end samples with
the real denoiser by the quantised-output rule of the fixture README; the fast sampler must equal the plain one
bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from engine.core.noise import ReplayNoise, SeededNoise
from engine.families.diamond.denoiser import Denoiser, DenoiserConfig
from engine.families.diamond.edm import EdmSampler, EdmSamplerConfig, build_sigmas, sample_reference
from tests.conftest import churn_case, fixture_json, read_json
from tests.test_diamond_models import assert_quantized_close

EXACT = {"atol": 1e-5, "rtol": 0.0}


@pytest.fixture(scope="module")
def atari_sampler(diamond_dir: Path) -> dict:
    meta = read_json(diamond_dir / "atari_agent.json")
    denoiser = Denoiser(DenoiserConfig.from_dict(meta["agent_config"]["denoiser"])).eval()
    denoiser.load_from(load_file(diamond_dir / "atari_agent.safetensors"), "denoiser.")
    return {"cases": read_json(diamond_dir / "atari_sampler_io.json")["cases"],
            "io": load_file(diamond_dir / "atari_sampler_io.safetensors"), "denoiser": denoiser}


@pytest.fixture(scope="module")
def csgo_env(diamond_dir: Path) -> dict:
    meta = read_json(diamond_dir / "csgo_agent.json")
    state = load_file(diamond_dir / "csgo_agent.safetensors")
    models = {}
    for name in ("denoiser", "upsampler"):
        models[name] = Denoiser(DenoiserConfig.from_dict(meta["agent_config"][name])).eval()
        models[name].load_from(state, f"{name}.")
    return {"meta": meta, "models": models, "env": read_json(diamond_dir / "csgo_world_model_env.json"),
            "io": load_file(diamond_dir / "csgo_world_model_env.safetensors")}


def draws(io: dict, case: str, count: int) -> torch.Tensor:
    return torch.stack([io[f"{case}.rand_{i:02d}"] for i in range(count)])


class ListNoise:
    """Replays pre-drawn tensors of differing shapes in call order (ReplayNoise needs one stacked tensor)."""

    def __init__(self, tensors: list[torch.Tensor]) -> None:
        self.tensors = tensors
        self.index = 0

    def reset(self) -> None:
        self.index = 0

    def draw(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        sample = self.tensors[self.index]
        assert tuple(sample.shape) == tuple(shape), f"draw {self.index}: {tuple(sample.shape)} vs {shape}"
        self.index += 1
        return sample.to(device)


class Recorder:
    """Wraps a denoise function, keeping every call's sigma; or replays recorded outputs when given them."""

    def __init__(self, denoise=None, outputs: list[torch.Tensor] | None = None) -> None:
        self.denoise = denoise
        self.outputs: Iterator[torch.Tensor] | None = iter(outputs) if outputs is not None else None
        self.sigmas: list[torch.Tensor] = []
        self.results: list[torch.Tensor] = []

    def __call__(self, x, sigma, obs, act, sigma_cond):
        self.sigmas.append(sigma.clone())
        out = next(self.outputs) if self.outputs is not None else self.denoise(x, sigma, obs, act, sigma_cond)
        self.results.append(out)
        return out


def run_both(denoise, prev_obs, prev_act, cfg: EdmSamplerConfig, noise: torch.Tensor):
    plain = sample_reference(denoise, prev_obs, prev_act, cfg, ReplayNoise(noise))
    fast = EdmSampler(denoise, cfg, prev_obs.shape[0]).sample(prev_obs, prev_act, ReplayNoise(noise),
                                                              keep_trajectory=True)
    return plain, fast


def assert_same_run(plain, fast) -> None:
    assert torch.equal(plain[0], fast[0])
    assert len(plain[1]) == len(fast[1])
    for a, b in zip(plain[1], fast[1], strict=True):
        assert torch.equal(a, b)


# the case names of this fixture set (parametrize reads them at collection)
CASES = list(fixture_json("diamond/atari_sampler_io.json").get("cases", {}))
CSGO_CASES = list(fixture_json("diamond/csgo_world_model_env.json").get("cases", {}))


@pytest.mark.parametrize("case", CASES)
def test_atari_sigmas(atari_sampler: dict, case: str) -> None:
    cfg = EdmSamplerConfig.from_dict(atari_sampler["cases"][case]["sampler_config"])
    sigmas = build_sigmas(cfg.num_steps_denoising, cfg.sigma_min, cfg.sigma_max, cfg.rho)
    assert torch.equal(sigmas, atari_sampler["io"][f"{case}.sigmas"])
    assert torch.equal(EdmSampler(lambda *a: a[0], cfg, 1).sigmas, sigmas)


@pytest.mark.parametrize("case", CASES)
def test_atari_sampler_arithmetic_replayed(atari_sampler: dict, case: str) -> None:
    spec, io = atari_sampler["cases"][case], atari_sampler["io"]
    cfg = EdmSamplerConfig.from_dict(spec["sampler_config"])
    calls = [io[f"{case}.call_{i:02d}.denoised"] for i in range(len(spec["denoise_calls"]))]
    noise = draws(io, case, len(spec["random_draws"]))
    plain_rec, fast_rec = Recorder(outputs=calls), Recorder(outputs=calls)
    plain = sample_reference(plain_rec, io["prev_obs"], io["prev_act"], cfg, ReplayNoise(noise))
    fast = EdmSampler(fast_rec, cfg, io["prev_obs"].shape[0]).sample(io["prev_obs"], io["prev_act"],
                                                                     ReplayNoise(noise), keep_trajectory=True)
    assert_same_run(plain, fast)
    torch.testing.assert_close(plain[0], io[f"{case}.output"], **EXACT)
    torch.testing.assert_close(torch.stack(plain[1]), io[f"{case}.trajectory"], **EXACT)
    for recorder in (plain_rec, fast_rec):
        assert len(recorder.sigmas) == len(spec["denoise_calls"])
        for sigma, call in zip(recorder.sigmas, spec["denoise_calls"], strict=True):
            assert list(sigma.shape) == call["sigma_shape"]
            assert sigma.reshape(-1).tolist() == pytest.approx(call["sigma"], rel=0, abs=0)


@pytest.mark.parametrize("case", CASES)
def test_atari_sampler_end_to_end(atari_sampler: dict, case: str) -> None:
    spec, io = atari_sampler["cases"][case], atari_sampler["io"]
    cfg = EdmSamplerConfig.from_dict(spec["sampler_config"])
    recorder = Recorder(atari_sampler["denoiser"].denoise)
    plain, fast = run_both(recorder, io["prev_obs"], io["prev_act"], cfg,
                           draws(io, case, len(spec["random_draws"])))
    assert_same_run(plain, fast)
    assert_quantized_close(plain[0], io[f"{case}.output"])
    assert_quantized_close(torch.stack(plain[1]), io[f"{case}.trajectory"])


def test_fast_equals_plain_with_seeded_noise(atari_sampler: dict) -> None:
    io = atari_sampler["io"]
    cases = atari_sampler["cases"]
    cfg = EdmSamplerConfig.from_dict(cases[churn_case(cases)]["sampler_config"])
    denoise = atari_sampler["denoiser"].denoise
    plain = sample_reference(denoise, io["prev_obs"], io["prev_act"], cfg, SeededNoise(7))
    fast = EdmSampler(denoise, cfg, io["prev_obs"].shape[0]).sample(io["prev_obs"], io["prev_act"],
                                                                    SeededNoise(7), keep_trajectory=True)
    assert_same_run(plain, fast)


def test_config_from_dict_reads_official_values() -> None:
    cfg = EdmSamplerConfig.from_dict({"num_steps_denoising": 10, "sigma_min": 1, "sigma_max": 5, "rho": 7,
                                      "order": 2, "s_churn": 10, "s_tmin": 1, "s_tmax": "inf", "s_noise": 0.9})
    assert cfg.s_tmax == float("inf") and cfg.s_cond == 0.0
    assert cfg.gamma == pytest.approx(2**0.5 - 1)
    with pytest.raises(ValueError):
        EdmSamplerConfig(num_steps_denoising=1, sigma_min=1, sigma_max=5, rho=7, order=3)


@pytest.mark.parametrize("fast", [False, True], ids=["plain", "fast"])
@pytest.mark.parametrize("case", CSGO_CASES)
def test_csgo_world_model_steps(csgo_env: dict, case: str, fast: bool) -> None:
    """The csgo play loop: next-frame sampler with s_cond, bicubic upsampling, upsampling sampler with churn.

    Each step is compared on its own: the next step starts from the reference's buffers, so a one-level flip
    in one step does not feed into the next."""
    spec, io, models = csgo_env["env"]["cases"][case], csgo_env["io"], csgo_env["models"]
    factor = csgo_env["meta"]["agent_config"]["upsampler"]["upsampling_factor"]
    t_den = models["denoiser"].cfg.inner_model.num_steps_conditioning
    t_up = models["upsampler"].cfg.inner_model.num_steps_conditioning
    cfg_next = EdmSamplerConfig.from_dict(spec["diffusion_sampler_next_obs"])
    cfg_up = EdmSamplerConfig.from_dict(spec["diffusion_sampler_upsampling"])
    noise = ListNoise([io[f"{case}.rand_{i:02d}"] for i in range(len(spec["random_draws"]))])
    rec_next, rec_up = Recorder(models["denoiser"].denoise), Recorder(models["upsampler"].denoise)
    if fast:
        fast_next, fast_up = EdmSampler(rec_next, cfg_next, 1), EdmSampler(rec_up, cfg_up, 1)

    def sample(which: str, prev_obs, prev_act):
        if fast:
            return (fast_next if which == "next_obs" else fast_up).sample(prev_obs, prev_act, noise)[0]
        rec, cfg = (rec_next, cfg_next) if which == "next_obs" else (rec_up, cfg_up)
        return sample_reference(rec, prev_obs, prev_act, cfg, noise)[0]

    to_float = lambda u8: u8.float().div(255).mul(2).sub(1)  # noqa: E731
    obs = to_float(io["spawn.low_res"])[None]
    full = to_float(io["spawn.full_res"])[None]
    act = io["spawn.act"][None].clone()
    sl = obs.shape[1]
    for k in range(spec["num_env_steps"]):
        p = f"{case}.step{k}."
        act[:, -1] = io[f"{case}.step_acts"][k]
        calls_before = len(rec_next.sigmas), len(rec_up.sigmas)
        next_obs = sample("next_obs", obs[:, sl - t_den:], act[:, sl - t_den:])
        assert_quantized_close(next_obs, io[p + "next_obs_low"])
        low = F.interpolate(io[p + "next_obs_low"], scale_factor=factor, mode="bicubic")
        torch.testing.assert_close(low, io[p + "low_res_upsampled"], atol=1e-5, rtol=1e-5)
        next_full = sample("upsampling", torch.cat((full[:, sl - t_up:], low[:, None]), dim=1), None)
        assert_quantized_close(next_full, io[p + "next_obs_full"])
        for rec, before, which in ((rec_next, calls_before[0], "next_obs"), (rec_up, calls_before[1], "upsampling")):
            expected = [c for c in spec["denoise_calls"] if c["step"] == k and c["sampler"] == which]
            assert len(rec.results) - before == len(expected)
            for call, result in zip(expected, rec.results[before:], strict=True):
                assert_quantized_close(result, io[f"{p}{which}.call_{call['call']:02d}.denoised"])
        obs, act, full = obs.roll(-1, dims=1), act.roll(-1, dims=1), full.roll(-1, dims=1)
        obs[:, -1], full[:, -1] = io[p + "next_obs_low"], io[p + "next_obs_full"]
        assert torch.equal(act, io[p + "act_buffer_after"])
    assert noise.index == len(noise.tensors)
