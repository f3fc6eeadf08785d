"""Masked autoregressive sampling of one WorldMAR frame (nwrousell/world-mar `WorldMAR.sample`).

All target tokens start hidden. Each of `mar_iters` iterations runs the encoder/decoder with the
current mask, then reveals the next group of tokens in a random order: the number left hidden after
iteration s is `floor(n * cos(pi/2 * (s+1)/mar_iters))` (at least one token per group), and each
revealed token is sampled by the diffusion head with DDIM (eta = 0, x0 clipped to [-1, 1]) from
its own start noise, conditioned on the decoder output at that token.

Random draws come from a NoiseSource: the reveal order (argsort of a (B, n) draw, unless `orders`
is given) and one (B, n, C) draw of start noise per frame, token j of sample b starting from
`noise[b, j]` whichever group reveals it. Attention dropout, where it is active (reference_compat
at sampling), draws from `dropout_noise` (or the global generator when that is None).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from engine.core.noise import NoiseSource
from engine.families.worldmar.diffusion import GaussianDiffusion, HeadNet
from engine.families.worldmar.masks import mask_from_orders, padding_mask
from engine.families.worldmar.model import Conditioning, WorldMAR


@dataclass(frozen=True)
class MARSettings:
    mar_iters: int = 4
    diffusion_steps: str | int | None = None  # respacing of the head's diffusion; None: the model's own


def reveal_schedule(tokens: int, mar_iters: int) -> list[tuple[int, int]]:
    """Per iteration, (hidden after it, hidden before it): the group revealed is `orders[:, after:before]`."""
    if not 1 <= mar_iters <= tokens:
        raise ValueError(f"mar_iters must be between 1 and {tokens}, got {mar_iters}")
    groups, hidden = [], tokens
    for step in range(mar_iters):
        rate = math.cos(math.pi / 2.0 * (step + 1) / mar_iters)
        after = min(math.floor(tokens * rate), hidden - 1)
        groups.append((after, hidden))
        hidden = after
    return groups


def largest_group(tokens: int, mar_iters: int) -> int:
    """The most tokens one iteration reveals: the row count every group is padded to where the head must
    keep one static shape (a compiled graph, a CUDA graph, a TensorRT engine)."""
    return max(before - after for after, before in reveal_schedule(tokens, mar_iters))


def ddim_trajectory(net: HeadNet, diffusion: GaussianDiffusion, cond: torch.Tensor,
                    start: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(x, clipped x0 estimate) after each DDIM step, from `start` (N, C) at the last step down to step 0."""
    x = start
    timesteps = diffusion.table("timestep_map", x.device)
    for index in reversed(range(diffusion.num_timesteps)):
        t = timesteps[index].expand(x.shape[0])
        eps = net(x, t, cond)[:, : x.shape[1]]
        x, x_start = diffusion.ddim_step(x, eps, index)
        yield x, x_start


def ddim_sample(net: HeadNet, diffusion: GaussianDiffusion, cond: torch.Tensor,
                start: torch.Tensor) -> torch.Tensor:
    """Tokens (N, C) sampled by DDIM from start noise (N, C), conditioned on cond (N, D)."""
    return deque(ddim_trajectory(net, diffusion, cond, start), maxlen=1).pop()[0]


class MARSampler:
    def __init__(self, model: WorldMAR, settings: MARSettings, noise: NoiseSource,
                 dropout_noise: NoiseSource | None = None) -> None:
        self.model = model
        self.settings = settings
        self.noise = noise
        self.dropout_noise = dropout_noise
        steps = settings.diffusion_steps
        self.diffusion = model.diffloss.gen_diffusion if steps is None else GaussianDiffusion.respaced(steps)
        self.schedule = reveal_schedule(model.frame_tokens, settings.mar_iters)

    @torch.no_grad()
    def sample(self, latents: torch.Tensor, actions: torch.Tensor, plucker: torch.Tensor,
               timestamps: torch.Tensor, batch_nframes: torch.Tensor,
               orders: torch.Tensor | None = None) -> torch.Tensor:
        """The next frame's raw VAE latents (B, H*W, C).

        latents (B, T, H*W, C) raw: frame 0 is the one to predict (its content is never read), then the
        previous frame, memory frames newest first, zero padding; actions (B, 25); plucker (B, T, h, w, 6)
        token maps (`WorldMAR.plucker`); timestamps (B, T) int; batch_nframes (B,) non-padding frames;
        orders (B, h*w) reveal order, drawn from the noise source when None.
        """
        model = self.model
        b, t = latents.shape[:2]
        model.check_frames(t)
        n, device = model.frame_tokens, latents.device
        if orders is None:
            orders = self.noise.draw((b, n), device).argsort(dim=-1)
        start_noise = self.noise.draw((b, n, model.token_dim), device)
        return self._frame(latents, actions, plucker, timestamps, batch_nframes, orders, start_noise)

    def _frame(self, latents: torch.Tensor, actions: torch.Tensor, plucker: torch.Tensor, timestamps: torch.Tensor,
               batch_nframes: torch.Tensor, orders: torch.Tensor, start_noise: torch.Tensor) -> torch.Tensor:
        """`sample` once its random draws are made: reveal order (B, n), start noise (B, n, C)."""
        model = self.model
        t = latents.shape[1]
        x = model.tokens(latents).to(model.dtype)
        x[:, 0] = 0
        cond = self._condition(actions, plucker, timestamps, batch_nframes)
        padding = padding_mask(batch_nframes, t)
        target = x[:, 0].flatten(1, 2)  # view: writes land in x
        for after, before in self.schedule:
            conditions = self._head_conditions(x, cond, mask_from_orders(orders, before), padding)
            group = orders[:, after:before].sort(dim=-1).values
            rows = group[..., None]
            cond_rows = conditions.gather(1, rows.expand(-1, -1, conditions.shape[-1]))
            start = start_noise.gather(1, rows.expand(-1, -1, model.token_dim)).to(x.dtype)
            target.scatter_(1, rows.expand(-1, -1, model.token_dim), self._denoise(cond_rows, start))
        return model.latents(x[:, 0]).float()

    def _condition(self, actions: torch.Tensor, plucker: torch.Tensor, timestamps: torch.Tensor,
                   batch_nframes: torch.Tensor) -> Conditioning:
        return self.model.condition(actions, plucker, timestamps, batch_nframes)

    def _head_conditions(self, x: torch.Tensor, cond: Conditioning, hidden: torch.Tensor,
                         padding: torch.Tensor) -> torch.Tensor:
        """The encoder/decoder with target tokens `hidden` (B, n) -> the head's condition per token (B, n, D)."""
        model = self.model
        dropout = model.attention_dropout(self.dropout_noise)
        return model.diffusion_conditions(model.masked_encoder_decoder(x, cond, hidden, None, padding, dropout))

    def _denoise(self, cond: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """A group's tokens (B, g, C) by DDIM with the head, from start noise (B, g, C), conditions (B, g, D)."""
        tokens = ddim_sample(self.model.diffloss.net, self.diffusion, cond.flatten(0, 1), start.flatten(0, 1))
        return tokens.view(start.shape)
