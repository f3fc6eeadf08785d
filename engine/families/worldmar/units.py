"""The static-shape network calls of one WorldMAR frame, as the backends run them and `build_trt.py` exports them.

A frame (nwrousell/world-mar `WorldMAR.sample`) is the conditioning once, then `mar_iters` iterations of the
masked encoder/decoder over all T frames (same shapes every time, only the hidden-token mask changes), each
followed by DDIM with the per-token diffusion head on the tokens it reveals. The head runs at one row count,
the largest group padded to (`engine.families.worldmar.mar.largest_group`), so one compiled graph or engine serves
every iteration.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.families.worldmar.model import Conditioning, WorldMAR


class MARCondition(nn.Module):
    """actions (B, 25), plucker maps (B, T, h, w, 6), timestamps (B, T), batch_nframes (B,) -> action, frame embeddings."""

    def __init__(self, model: WorldMAR) -> None:
        super().__init__()
        self.model = model

    def forward(self, actions: torch.Tensor, plucker: torch.Tensor, timestamps: torch.Tensor,
                batch_nframes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cond = self.model.condition(actions, plucker, timestamps, batch_nframes)
        return cond.action, cond.frames


class MARStep(nn.Module):
    """One MAR iteration: tokens (B, T, h, w, C), conditioning, hidden mask (B, h*w), padding (B, T)
    -> the diffusion head's conditions for every target token (B, h*w, D)."""

    def __init__(self, model: WorldMAR) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, action: torch.Tensor, frames: torch.Tensor, hidden: torch.Tensor,
                padding: torch.Tensor) -> torch.Tensor:
        dec = self.model.masked_encoder_decoder(x, Conditioning(action, frames), hidden, None, padding, None)
        return self.model.diffusion_conditions(dec)


class MARHead(nn.Module):
    """The diffusion head's network: noisy tokens (N, C), timesteps (N,), conditions (N, D) -> its output."""

    def __init__(self, model: WorldMAR) -> None:
        super().__init__()
        self.net = model.diffloss.net

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.net(x, t, c)
