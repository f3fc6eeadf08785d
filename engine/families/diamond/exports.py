"""ONNX export specs of the DIAMOND networks in their play configuration (eloialonso/diamond).

One tick of a DIAMOND world calls, with static shapes:
- the denoiser (and on CS:GO the upsampler) once per sampler step: noisy frame, noise level sigma
  (0-d), conditioning frames, actions (Atari: (B, T) indices; CS:GO: (B, T, A) multi-hot) and, on the
  csgo branch, the conditioning frames' noise level (B,) -> the quantised denoised frame;
- the reward/end model on (frame, next frame, action) with its LSTM state -> logits and the new state;
- the actor-critic on one frame with its LSTM state -> action logits, value and the new state.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from omegaconf import DictConfig
from torch import nn

from engine.backends.export import ExportSpec
from engine.families.diamond.agent import ActorCritic, RewEndModel
from engine.families.diamond.denoiser import Denoiser
from engine.families.diamond.units import ActorCriticStep, DenoiserCall, RewEndStep


def denoiser_spec(name: str, role: str, denoiser: Denoiser, height: int, width: int, batch: int = 1,
                  sigma_cond: bool = False, seed: int = 0) -> ExportSpec:
    """The denoiser (or upsampler) at frames of `height` x `width`; sizes of the rest from its config."""
    gen = torch.Generator().manual_seed(seed)
    inner = denoiser.inner_model
    channels = inner.cfg.img_channels
    obs_channels = inner.conv_in.in_channels - channels
    device, dtype = inner.device, inner.dtype
    steps = inner.cfg.num_steps_conditioning

    def uniform(*shape: int) -> torch.Tensor:
        return (torch.rand(shape, generator=gen) * 2 - 1).to(device, dtype)

    inputs = [uniform(batch, channels, height, width), torch.tensor(1.5, device=device),
              uniform(batch, obs_channels, height, width)]
    names = ["noisy", "sigma", "obs"]
    actions = inner.act_emb is not None
    if actions and inner.cfg.is_upsampler is False and inner.cfg.noise_cond:  # csgo branch: multi-hot vectors
        inputs.append((torch.rand((batch, steps, inner.cfg.num_actions), generator=gen) > 0.8).to(device))
        inputs[-1] = inputs[-1].to(dtype)
        names.append("act")
    elif actions:
        inputs.append(torch.randint(inner.cfg.num_actions, (batch, steps), generator=gen).to(device))
        names.append("act")
    if sigma_cond:
        inputs.append(torch.full((batch,), 0.1, device=device))
        names.append("sigma_cond")
    return ExportSpec(name, role, DenoiserCall(denoiser, actions, sigma_cond), tuple(inputs), names, ["denoised"])


def rew_end_spec(name: str, role: str, model: RewEndModel, batch: int = 1, seed: int = 0) -> ExportSpec:
    gen = torch.Generator().manual_seed(seed)
    cfg = model.cfg
    device, dtype = model.device, model.dtype
    frame = (batch, 1, cfg.img_channels, cfg.img_size, cfg.img_size)
    state = torch.zeros((1, batch, cfg.lstm_dim), device=device, dtype=dtype)
    inputs = ((torch.rand(frame, generator=gen) * 2 - 1).to(device, dtype),
              torch.randint(cfg.num_actions, (batch, 1), generator=gen).to(device),
              (torch.rand(frame, generator=gen) * 2 - 1).to(device, dtype), state, state.clone())
    return ExportSpec(name, role, RewEndStep(model), inputs, ["obs", "act", "next_obs", "hx", "cx"],
                      ["logits_rew", "logits_end", "hx_out", "cx_out"])


def actor_critic_spec(name: str, role: str, model: ActorCritic, batch: int = 1, seed: int = 0) -> ExportSpec:
    gen = torch.Generator().manual_seed(seed)
    cfg = model.cfg
    device, dtype = model.device, model.dtype
    obs = (torch.rand((batch, cfg.img_channels, cfg.img_size, cfg.img_size), generator=gen) * 2 - 1)
    hx, cx = (torch.randn((batch, cfg.lstm_dim), generator=gen).to(device, dtype) for _ in range(2))
    return ExportSpec(name, role, ActorCriticStep(model), (obs.to(device, dtype), hx, cx),
                      ["obs", "hx", "cx"], ["logits_act", "value", "hx_out", "cx_out"])


def diamond_exports(networks: Mapping[str, nn.Module], frame_sizes: Mapping[str, tuple[int, int]],
                    sigma_cond: Mapping[str, bool] | None = None, batch: int = 1) -> list[ExportSpec]:
    """Specs for every DIAMOND network of a world, named by role; `frame_sizes[role]` for each denoiser."""
    specs = []
    for role, module in networks.items():
        if isinstance(module, Denoiser):
            height, width = frame_sizes[role]
            specs.append(denoiser_spec(role, role, module, height, width, batch,
                                       sigma_cond=bool((sigma_cond or {}).get(role))))
        elif isinstance(module, RewEndModel):
            specs.append(rew_end_spec(role, role, module, batch))
        elif isinstance(module, ActorCritic):
            specs.append(actor_critic_spec(role, role, module, batch))
        else:
            raise TypeError(f"no ONNX export for network {role} ({type(module).__name__})")
    return specs


def atari_exports(cfg: DictConfig, networks: Mapping[str, nn.Module]) -> list[ExportSpec]:
    """An Atari world's denoiser at its frame size, its reward/end model and actor-critic."""
    size = int(cfg.env.size)
    return diamond_exports(networks, {"denoiser": (size, size)})


def csgo_exports(cfg: DictConfig, networks: Mapping[str, nn.Module]) -> list[ExportSpec]:
    """The CS:GO denoiser at the low resolution and the upsampler at the full one, with the preset's s_cond."""
    height, width = (int(v) for v in cfg.frame_size)
    factor = int(cfg.networks.upsampler.upsampling_factor)
    preset = cfg.sampler.presets[cfg.sampler.preset]
    return diamond_exports(networks, {"denoiser": (height // factor, width // factor), "upsampler": (height, width)},
                           sigma_cond={"denoiser": float(preset.next_obs.get("s_cond", 0.0)) > 0,
                                       "upsampler": float(preset.upsampling.get("s_cond", 0.0)) > 0})
