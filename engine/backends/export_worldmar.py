"""ONNX export specs of the WorldMAR network calls of one MAR frame (nwrousell/world-mar `WorldMAR.sample`).

A frame is `mar_iters` iterations of the masked encoder/decoder over all T frames (same shapes each time,
only the hidden-token mask changes), each followed by DDIM with the per-token diffusion head on the group
of tokens it reveals (the group size of each iteration is fixed by the reveal schedule). Exported with
static shapes: the conditioning (once per frame), the encoder/decoder step, and the head at the size of
the first group.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.backends.export import ExportSpec
from engine.models.worldmar import Conditioning, WorldMAR
from engine.models.worldmar_masks import mask_from_orders, padding_mask
from engine.sampling.mar import reveal_schedule


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


def mar_inputs(model: WorldMAR, frames: int, batch: int, hidden_count: int,
               seed: int = 0) -> dict[str, tuple[torch.Tensor, ...]]:
    """Example inputs of the three calls: `hidden_count` target tokens hidden in a random order."""
    gen = torch.Generator().manual_seed(seed)
    weight = model.z_proj.weight
    h, w = model.grid
    p = model.patch_size
    latents = torch.randn((batch, frames, h * w * p * p, model.vae_embed_dim), generator=gen)
    x = model.tokens(latents.to(weight.device)).to(weight.dtype)
    x[:, 0] = 0
    nframes = torch.full((batch,), frames, dtype=torch.long, device=weight.device)
    condition = (torch.rand((batch, 25), generator=gen).to(weight.device, weight.dtype),
                 torch.randn((batch, frames, h, w, 6), generator=gen).to(weight.device, weight.dtype),
                 -torch.arange(frames, device=weight.device).repeat(batch, 1), nframes)
    with torch.no_grad():
        cond = model.condition(*condition)
    orders = torch.rand((batch, h * w), generator=gen).argsort(dim=-1).to(weight.device)
    step = (x, cond.action, cond.frames, mask_from_orders(orders, hidden_count), padding_mask(nframes, frames))
    return {"condition": condition, "step": step}


def worldmar_exports(model: WorldMAR, frames: int, batch: int = 1, mar_iters: int = 4) -> list[ExportSpec]:
    """The MAR frame's calls at T = `frames` (target + previous + memory frames) and batch `batch`."""
    tokens = model.frame_tokens
    inputs = mar_inputs(model, frames, batch, hidden_count=tokens)
    after, before = reveal_schedule(tokens, mar_iters)[0]
    group = batch * (before - after)
    weight = model.z_proj.weight
    gen = torch.Generator().manual_seed(1)
    head_inputs = (torch.randn((group, model.token_dim), generator=gen).to(weight.device, weight.dtype),
                   torch.full((group,), int(model.diffloss.gen_diffusion.table("timestep_map", weight.device)[-1]),
                              device=weight.device),
                   torch.randn((group, model.diffloss.net.cond_embed.in_features), generator=gen).to(
                       weight.device, weight.dtype))
    return [
        ExportSpec("mar_condition", "worldmar", MARCondition(model), inputs["condition"],
                   ["actions", "plucker", "timestamps", "batch_nframes"], ["action", "frames"]),
        ExportSpec("mar_step", "worldmar", MARStep(model), inputs["step"],
                   ["x", "action", "frames", "hidden", "padding"], ["conditions"]),
        ExportSpec("mar_head", "worldmar", MARHead(model), head_inputs, ["x", "t", "c"], ["out"]),
    ]
