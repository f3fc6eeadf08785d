"""The static-shape network calls of a DIAMOND tick (eloialonso/diamond), as plain-tensor units.

`build_trt.py` exports exactly these modules, and a backend that replaces whole units (TensorRT) swaps an
engine in for each by name, so the world's tick and the engines agree on every input:

- `DenoiserCall` (`denoiser`, on CS:GO also `upsampler`): `Denoiser.denoise` with only the inputs the world
  passes (actions and/or the conditioning noise level where it has them);
- `RewEndStep` (`rew_end_model`): one frame of the reward/end model with its LSTM state in and out;
- `ActorCriticStep` (`actor_critic`): one frame of the policy with its LSTM state in and out.

`EngineDenoiser` puts an engine of `DenoiserCall` where an `EdmSampler` expects a denoise function.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from engine.families.diamond.agent import ActorCritic, RewEndModel
from engine.families.diamond.denoiser import Denoiser


class DenoiserCall(nn.Module):
    """`Denoiser.denoise` with the inputs its world passes: actions and/or sigma_cond only where it has them."""

    def __init__(self, denoiser: Denoiser, actions: bool, sigma_cond: bool) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.actions = actions
        self.sigma_cond = sigma_cond

    def forward(self, noisy: torch.Tensor, sigma: torch.Tensor, obs: torch.Tensor,
                *extra: torch.Tensor) -> torch.Tensor:
        act = extra[0] if self.actions else None
        sigma_cond = extra[-1] if self.sigma_cond else None
        return self.denoiser.denoise(noisy, sigma, obs, act, sigma_cond)


class RewEndStep(nn.Module):
    """One step of the reward/end model: (obs, act, next_obs) of one frame with the LSTM state in and out."""

    def __init__(self, model: RewEndModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor, hx: torch.Tensor,
                cx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        rew, end, (hx, cx) = self.model.predict_rew_end(obs, act, next_obs, (hx, cx))
        return rew, end, hx, cx


def rew_end_example(model: RewEndModel) -> tuple[torch.Tensor, ...]:
    """Inputs of one `RewEndStep` at the model's frame size (zeros): obs, act, next_obs, LSTM hx, cx."""
    cfg = model.cfg
    frame = torch.zeros((1, 1, cfg.img_channels, cfg.img_size, cfg.img_size), device=model.device, dtype=model.dtype)
    state = torch.zeros((1, 1, cfg.lstm_dim), device=model.device, dtype=model.dtype)
    act = torch.zeros((1, 1), dtype=torch.int64, device=model.device)
    return frame, act, frame.clone(), state, state.clone()


class ActorCriticStep(nn.Module):
    """One step of the actor-critic: a frame with the LSTM state in -> action logits, value, the new state."""

    def __init__(self, model: ActorCritic) -> None:
        super().__init__()
        self.model = model

    def forward(self, obs: torch.Tensor, hx: torch.Tensor, cx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, value, (hx, cx) = self.model.predict_act_value(obs, (hx, cx))
        return logits, value, hx, cx


def actor_critic_example(model: ActorCritic) -> tuple[torch.Tensor, ...]:
    """Inputs of one `ActorCriticStep` at the model's frame size: a zero frame and the episode's initial state."""
    cfg = model.cfg
    frame = torch.zeros((1, cfg.img_channels, cfg.img_size, cfg.img_size), device=model.device, dtype=model.dtype)
    return frame, *model.initial_state(1)


class EngineDenoiser:
    """A sampler's denoise function (`engine.families.diamond.edm.DenoiseFn`) that runs a `DenoiserCall` engine.

    The engine was built for batch 1 with a 0-d sigma; the sampler's Heun calls pass sigma as (1,), which
    holds the same value. `begin` exists so the world drives it like `PlayDenoiser`.
    """

    def __init__(self, engine: Callable[..., torch.Tensor]) -> None:
        self.engine = engine

    def begin(self, act: torch.Tensor | None) -> None:
        """Nothing to precompute: the engine takes the actions with every call."""

    def __call__(self, noisy_next_obs: torch.Tensor, sigma: torch.Tensor, obs: torch.Tensor,
                 act: torch.Tensor | None, sigma_cond: torch.Tensor | None) -> torch.Tensor:
        extra = [t for t in (act, sigma_cond) if t is not None]
        return self.engine(noisy_next_obs, sigma.reshape(()), obs, *extra).float()
