"""DIAMOND networks against the reference fixtures: keys/shapes (fixture and full size), strict loading, parity.

Every size comes from the fixture json files; tolerances follow the fixture README: raw outputs atol/rtol 1e-5
in float32, quantised outputs at most one level (2/255) apart on at most max(2, 1 %) of the elements.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine.errors import CheckpointError
from engine.families.diamond.agent import ActorCritic, ActorCriticConfig, RewEndModel, RewEndModelConfig
from engine.families.diamond.denoiser import Denoiser, DenoiserConfig, quantize
from engine.families.diamond.unet import FourierFeatures
from tests.conftest import read_json

RAW = {"atol": 1e-5, "rtol": 1e-5}
LEVEL = 2 / 255


def assert_quantized_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    diff = (actual - expected).abs()
    assert diff.max().item() <= LEVEL + 1e-5, f"max diff {diff.max().item()}"
    off = int((diff > 1e-5).sum())
    assert off <= max(2, expected.numel() // 100), f"{off} of {expected.numel()} elements off by one level"


@pytest.fixture(scope="module")
def atari(diamond_dir: Path) -> dict:
    meta = read_json(diamond_dir / "atari_agent.json")
    state = load_file(diamond_dir / "atari_agent.safetensors")
    cfg = meta["agent_config"]
    denoiser = Denoiser(DenoiserConfig.from_dict(cfg["denoiser"])).eval()
    denoiser.load_from(state, "denoiser.")
    rew_end = RewEndModel(RewEndModelConfig.from_dict(cfg["rew_end_model"])).eval()
    rew_end.load_from(state, "rew_end_model.")
    actor_critic = ActorCritic(ActorCriticConfig.from_dict(cfg["actor_critic"])).eval()
    actor_critic.load_from(state, "actor_critic.")
    return {"meta": meta, "state": state, "denoiser": denoiser, "rew_end_model": rew_end,
            "actor_critic": actor_critic}


@pytest.fixture(scope="module")
def csgo(diamond_dir: Path) -> dict:
    meta = read_json(diamond_dir / "csgo_agent.json")
    state = load_file(diamond_dir / "csgo_agent.safetensors")
    models = {"meta": meta, "state": state}
    for name in ("denoiser", "upsampler"):
        model = Denoiser(DenoiserConfig.from_dict(meta["agent_config"][name])).eval()
        model.load_from(state, f"{name}.")
        models[name] = model
    return models


def build_agent(agent_config: dict) -> dict[str, torch.nn.Module]:
    """The sub-networks an official agent config names (null entries are absent)."""
    builders = {"denoiser": lambda d: Denoiser(DenoiserConfig.from_dict(d)),
                "upsampler": lambda d: Denoiser(DenoiserConfig.from_dict(d)),
                "rew_end_model": lambda d: RewEndModel(RewEndModelConfig.from_dict(d)),
                "actor_critic": lambda d: ActorCritic(ActorCriticConfig.from_dict(d))}
    return {name: build(agent_config[name]) for name, build in builders.items() if agent_config.get(name)}


def agent_shapes(modules: dict[str, torch.nn.Module]) -> dict[str, list[int]]:
    return {f"{name}.{key}": list(value.shape)
            for name, module in modules.items() for key, value in module.state_dict().items()}


@pytest.mark.parametrize("name", ["atari_agent", "csgo_agent"])
def test_fixture_agent_keys_and_shapes(diamond_dir: Path, name: str) -> None:
    meta = read_json(diamond_dir / f"{name}.json")
    shapes = agent_shapes(build_agent(meta["agent_config"]))
    assert shapes == {key: entry["shape"] for key, entry in meta["state_dict"].items()}
    assert len(shapes) == meta["num_state_dict_tensors"]


@pytest.mark.parametrize("name", ["atari_agent", "csgo_agent"])
def test_full_size_agent_keys_and_shapes(diamond_dir: Path, name: str) -> None:
    manifest = read_json(diamond_dir / f"manifest_{name}.json")
    with torch.device("meta"):
        modules = build_agent(manifest["agent_config"])
    shapes = agent_shapes(modules)
    assert shapes == {key: entry["shape"] for key, entry in manifest["keys"].items()}
    for name_, count in manifest["num_state_dict_elements"].items():
        if name_ != "total":
            assert sum(v.numel() for v in modules[name_].state_dict().values()) == count
    for name_, count in manifest["num_parameters"].items():
        if name_ != "total":
            assert sum(p.numel() for p in modules[name_].parameters()) == count


def test_full_size_atari_checkpoint_loads_strictly(diamond_dir: Path) -> None:
    manifest = read_json(diamond_dir / "manifest_atari_agent.json")
    generator = torch.Generator().manual_seed(0)
    flat = {key: torch.randn(entry["shape"], generator=generator) for key, entry in manifest["keys"].items()}
    for name, module in build_agent(manifest["agent_config"]).items():
        module.load_from(flat, f"{name}.")
        for key, value in module.state_dict().items():
            assert torch.equal(value, flat[f"{name}.{key}"]), key


def test_full_size_csgo_checkpoint_loads_strictly_on_meta(diamond_dir: Path) -> None:
    manifest = read_json(diamond_dir / "manifest_csgo_agent.json")
    flat = {key: torch.empty(entry["shape"], device="meta") for key, entry in manifest["keys"].items()}
    with torch.device("meta"):
        modules = build_agent(manifest["agent_config"])
    for name, module in modules.items():
        module.load_from(flat, f"{name}.")


def test_mismatched_checkpoint_is_one_line_error(atari: dict) -> None:
    model = Denoiser(DenoiserConfig.from_dict(atari["meta"]["agent_config"]["denoiser"]))
    state = dict(atari["state"])
    conv = "denoiser.inner_model.conv_in.weight"
    state[conv] = torch.zeros(1, 1, 3, 3)
    del state["denoiser.inner_model.noise_emb.weight"]
    state["denoiser.inner_model.extra.weight"] = torch.zeros(2)
    with pytest.raises(CheckpointError) as info:
        model.load_from(state, "denoiser.")
    message = str(info.value)
    assert "\n" not in message
    for key in ("inner_model.conv_in.weight", "inner_model.noise_emb.weight", "inner_model.extra.weight"):
        assert key in message
    with pytest.raises(CheckpointError, match=r"upsampler\."):
        model.load_from(atari["state"], "upsampler.")


def test_fourier_buffers_are_loaded_not_redrawn(atari: dict, csgo: dict) -> None:
    cases = [(atari, "denoiser", "noise_emb")] + [(csgo, name, emb) for name in ("denoiser", "upsampler")
                                                  for emb in ("noise_emb", "noise_cond_emb")]
    for models, name, emb in cases:
        module: FourierFeatures = getattr(models[name].inner_model, emb)
        assert torch.equal(module.weight, models["state"][f"{name}.inner_model.{emb}.weight"])
    assert atari["denoiser"].inner_model.noise_cond_emb is None
    assert csgo["upsampler"].inner_model.act_emb is None


def test_atari_denoiser_parity(atari: dict, diamond_dir: Path) -> None:
    io = load_file(diamond_dir / "atari_denoise_io.safetensors")
    model: Denoiser = atari["denoiser"]
    with torch.no_grad():
        cs = model.compute_conditioners(io["sigma"])
        for name in ("c_in", "c_out", "c_skip", "c_noise"):
            torch.testing.assert_close(getattr(cs, name), io[name], **RAW)
        inner = model.inner_model
        torch.testing.assert_close(inner.noise_emb(cs.c_noise), io["noise_emb_out"], **RAW)
        torch.testing.assert_close(inner.embed_actions(io["act"]), io["act_emb_out"], **RAW)
        torch.testing.assert_close(inner.condition(cs.c_noise, None, io["act"]), io["cond"], **RAW)
        out = model.model_output(io["noisy_next_obs"], cs, io["obs"], io["act"])
        torch.testing.assert_close(out, io["model_output"], **RAW)
        unquantized = model.denoise_unquantized(io["noisy_next_obs"], io["sigma"], io["obs"], io["act"])
        torch.testing.assert_close(unquantized, io["denoised_unquantized"], **RAW)
        assert_quantized_close(model.denoise(io["noisy_next_obs"], io["sigma"], io["obs"], io["act"]),
                               io["denoised"])
        assert torch.equal(quantize(io["denoised_unquantized"]), io["denoised"])
        with pytest.raises(ValueError):
            model.denoise(io["noisy_next_obs"], io["sigma"], io["obs"], io["act"], sigma_cond=io["sigma"])


@pytest.mark.parametrize("case", ["cond", "nocond"])
def test_csgo_denoiser_parity(csgo: dict, diamond_dir: Path, case: str) -> None:
    io = load_file(diamond_dir / "csgo_denoise_io.safetensors")
    model: Denoiser = csgo["denoiser"]
    sigma_cond = io["sigma_cond"] if case == "cond" else None
    p = f"{case}."
    with torch.no_grad():
        cs = model.compute_conditioners(io["sigma"], sigma_cond)
        torch.testing.assert_close(cs.c_noise_cond, io[p + "c_noise_cond"], **RAW)
        inner = model.inner_model
        torch.testing.assert_close(inner.noise_cond_emb(cs.c_noise_cond), io[p + "noise_cond_emb_out"], **RAW)
        torch.testing.assert_close(inner.condition(cs.c_noise, cs.c_noise_cond, io["act"]), io[p + "cond"], **RAW)
        torch.testing.assert_close(model.model_output(io["noisy_next_obs"], cs, io["obs"], io["act"], sigma_cond),
                                   io[p + "model_output"], **RAW)
        if case == "cond":
            for name in ("c_in", "c_out", "c_skip", "c_noise"):
                torch.testing.assert_close(getattr(cs, name), io[p + name], **RAW)
            torch.testing.assert_close(inner.embed_actions(io["act"]), io[p + "act_emb_out"], **RAW)
            torch.testing.assert_close(inner.noise_emb(cs.c_noise), io[p + "noise_emb_out"], **RAW)
            torch.testing.assert_close(
                model.denoise_unquantized(io["noisy_next_obs"], io["sigma"], io["obs"], io["act"], sigma_cond),
                io[p + "denoised_unquantized"], **RAW)
        assert_quantized_close(model.denoise(io["noisy_next_obs"], io["sigma"], io["obs"], io["act"], sigma_cond),
                               io[p + "denoised"])


def test_csgo_upsampler_parity(csgo: dict, diamond_dir: Path) -> None:
    io = load_file(diamond_dir / "csgo_upsampler_denoise_io.safetensors")
    model: Denoiser = csgo["upsampler"]
    factor = csgo["meta"]["agent_config"]["upsampler"]["upsampling_factor"]
    low = torch.nn.functional.interpolate(io["low_res"], scale_factor=factor, mode="bicubic")
    torch.testing.assert_close(low, io["obs"][:, -low.shape[1]:], **RAW)
    with torch.no_grad():
        cs = model.compute_conditioners(io["sigma"])
        for name in ("c_in", "c_out", "c_skip", "c_noise", "c_noise_cond"):
            torch.testing.assert_close(getattr(cs, name), io[name], **RAW)
        inner = model.inner_model
        torch.testing.assert_close(inner.noise_emb(cs.c_noise), io["noise_emb_out"], **RAW)
        torch.testing.assert_close(inner.noise_cond_emb(cs.c_noise_cond), io["noise_cond_emb_out"], **RAW)
        torch.testing.assert_close(inner.condition(cs.c_noise, cs.c_noise_cond, None), io["cond"], **RAW)
        torch.testing.assert_close(model.model_output(io["noisy_next_obs"], cs, io["obs"], None),
                                   io["model_output"], **RAW)
        assert_quantized_close(model.denoise(io["noisy_next_obs"], io["sigma"], io["obs"]), io["denoised"])


def test_rew_end_model_parity(atari: dict, diamond_dir: Path) -> None:
    io = load_file(diamond_dir / "atari_rew_end_io.safetensors")
    model: RewEndModel = atari["rew_end_model"]
    with torch.no_grad():
        torch.testing.assert_close(model.encode(io["burnin.obs"], io["burnin.act"], io["burnin.next_obs"]),
                                   io["burnin.encoder_out"], **RAW)
        state = None
        for phase in ("burnin", "step"):
            rew, end, state = model.predict_rew_end(io[f"{phase}.obs"], io[f"{phase}.act"],
                                                    io[f"{phase}.next_obs"], state)
            torch.testing.assert_close(rew, io[f"{phase}.logits_rew"], **RAW)
            torch.testing.assert_close(end, io[f"{phase}.logits_end"], **RAW)
            torch.testing.assert_close(state[0], io[f"{phase}.hx"], **RAW)
            torch.testing.assert_close(state[1], io[f"{phase}.cx"], **RAW)


def test_actor_critic_parity(atari: dict, diamond_dir: Path) -> None:
    io = load_file(diamond_dir / "atari_actor_critic_io.safetensors")
    model: ActorCritic = atari["actor_critic"]
    batch = io["obs"].shape[0]
    zeros = model.initial_state(batch)
    assert torch.equal(zeros[0], io["hx0"]) and torch.equal(zeros[1], io["cx0"])
    state = (io["hx0"], io["cx0"])
    with torch.no_grad():
        torch.testing.assert_close(model.encoder(io["obs"][:, 0]), io["encoder_out_t0"], **RAW)
        for t in range(io["obs"].shape[1]):
            logits, value, state = model.predict_act_value(io["obs"][:, t], state)
            torch.testing.assert_close(logits, io["logits_act"][:, t], **RAW)
            torch.testing.assert_close(value, io["val"][:, t], **RAW)
            torch.testing.assert_close(state[0], io["hx"][:, t], **RAW)
            torch.testing.assert_close(state[1], io["cx"][:, t], **RAW)
