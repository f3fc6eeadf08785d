"""The Atari agent's recurrent heads (eloialonso/diamond main branch): reward/end model and actor-critic.

The reward/end model reads (frame, next frame, action) through a ResBlock encoder conditioned on the action
embedding, then an LSTM; its 5 logits are 3 reward classes (-1, 0, +1) and 2 end classes. The actor-critic
reads one frame through a small residual CNN, then an LSTMCell, and gives action logits and a value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.core.module import Placed
from engine.families.diamond.unet import Downsample, GroupNorm, PrefixLoadable, ResBlocks

LSTMState = tuple[torch.Tensor, torch.Tensor]


def _from_dict(cls: type, d: Mapping[str, Any]) -> Any:
    known = {f.name for f in fields(cls)}
    return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known})


@dataclass(frozen=True)
class RewEndModelConfig:
    lstm_dim: int
    img_channels: int
    img_size: int
    cond_channels: int
    depths: tuple[int, ...]
    channels: tuple[int, ...]
    attn_depths: tuple[int, ...]
    num_actions: int

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RewEndModelConfig:
        return _from_dict(cls, d)


@dataclass(frozen=True)
class ActorCriticConfig:
    lstm_dim: int
    img_channels: int
    img_size: int
    channels: tuple[int, ...]
    down: tuple[int, ...]
    num_actions: int

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ActorCriticConfig:
        return _from_dict(cls, d)


class RewEndEncoder(nn.Module):
    """The U-Net down path plus two attention ResBlocks at the deepest level, conditioned on the action."""

    def __init__(self, in_channels: int, cond_channels: int, depths: Sequence[int], channels: Sequence[int],
                 attn_depths: Sequence[int]) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        previous = [channels[0], *channels[:-1]]
        self.blocks = nn.ModuleList(
            ResBlocks([c_prev] + [c] * (n - 1), [c] * n, cond_channels, bool(attn))
            for n, c, c_prev, attn in zip(depths, channels, previous, attn_depths, strict=True))
        self.blocks.append(ResBlocks([channels[-1]] * 2, [channels[-1]] * 2, cond_channels, True))
        self.downsamples = nn.ModuleList([nn.Identity(), *(Downsample(c) for c in channels[:-1])])

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for i, block in enumerate(self.blocks):
            if i < len(self.downsamples):
                x = self.downsamples[i](x)
            x, _ = block(x, cond)
        return x


class RewEndModel(Placed, nn.Module, PrefixLoadable):
    def __init__(self, cfg: RewEndModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = RewEndEncoder(2 * cfg.img_channels, cfg.cond_channels, cfg.depths, cfg.channels,
                                     cfg.attn_depths)
        self.act_emb = nn.Embedding(cfg.num_actions, cfg.cond_channels)
        side = cfg.img_size // 2 ** (len(cfg.depths) - 1)
        self.lstm = nn.LSTM(cfg.channels[-1] * side * side, cfg.lstm_dim, batch_first=True)
        self.head = nn.Sequential(nn.Linear(cfg.lstm_dim, cfg.lstm_dim), nn.SiLU(),
                                  nn.Linear(cfg.lstm_dim, 3 + 2, bias=False))

    def encode(self, obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """Encoder features (B*T, c, h, w) of frames (B, T, C, H, W) and actions (B, T)."""
        x = torch.cat((obs.flatten(0, 1), next_obs.flatten(0, 1)), dim=1)
        return self.encoder(x, self.act_emb(act.flatten(0, 1)))

    def predict_rew_end(self, obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor,
                        hx_cx: LSTMState | None = None) -> tuple[torch.Tensor, torch.Tensor, LSTMState]:
        """Reward logits (B, T, 3), end logits (B, T, 2) and the LSTM state, each of (1, B, lstm_dim)."""
        b, t = obs.shape[:2]
        x = self.encode(obs, act, next_obs).reshape(b, t, -1)
        x, hx_cx = self.lstm(x, hx_cx)
        logits = self.head(x)
        return logits[..., :3], logits[..., 3:], hx_cx

    def forward(self, obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor,
                hx_cx: LSTMState | None = None) -> tuple[torch.Tensor, torch.Tensor, LSTMState]:
        return self.predict_rew_end(obs, act, next_obs, hx_cx)


class SmallResBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.f = nn.Sequential(GroupNorm(in_channels), nn.SiLU(), nn.Conv2d(in_channels, out_channels, 3, padding=1))
        self.skip_projection = (nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels
                                else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip_projection(x) + self.f(x)


class ActorCriticEncoder(nn.Module):
    def __init__(self, in_channels: int, channels: Sequence[int], down: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels[0], 3, padding=1)]
        for c_prev, c, d in zip([channels[0], *channels[:-1]], channels, down, strict=True):
            layers.append(SmallResBlock(c_prev, c))
            if d:
                layers.append(nn.MaxPool2d(2))
        self.encoder = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


class ActorCritic(Placed, nn.Module, PrefixLoadable):
    def __init__(self, cfg: ActorCriticConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = ActorCriticEncoder(cfg.img_channels, cfg.channels, cfg.down)
        side = cfg.img_size // 2 ** sum(1 for d in cfg.down if d)
        self.lstm = nn.LSTMCell(cfg.channels[-1] * side * side, cfg.lstm_dim)
        self.critic_linear = nn.Linear(cfg.lstm_dim, 1)
        self.actor_linear = nn.Linear(cfg.lstm_dim, cfg.num_actions)

    def initial_state(self, batch: int) -> LSTMState:
        """Zero (hx, cx), each (B, lstm_dim): the state at the start of an episode."""
        zeros = torch.zeros(batch, self.cfg.lstm_dim, device=self.device, dtype=self.dtype)
        return zeros, zeros.clone()

    def predict_act_value(self, obs: torch.Tensor,
                          hx_cx: LSTMState | None = None) -> tuple[torch.Tensor, torch.Tensor, LSTMState]:
        """Action logits (B, A), value (B,) and the new state, from one frame per env (B, C, H, W)."""
        x = self.encoder(obs).flatten(start_dim=1)
        hx, cx = self.lstm(x, hx_cx)
        return self.actor_linear(hx), self.critic_linear(hx).squeeze(dim=1), (hx, cx)

    def forward(self, obs: torch.Tensor,
                hx_cx: LSTMState | None = None) -> tuple[torch.Tensor, torch.Tensor, LSTMState]:
        return self.predict_act_value(obs, hx_cx)


def policy_action(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample actions from Categorical(logits), as the reference policy does; (B, A) -> (B,) int64."""
    return torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator).squeeze(-1)
