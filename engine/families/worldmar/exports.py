"""ONNX export specs of the WorldMAR network calls of one MAR frame (nwrousell/world-mar `WorldMAR.sample`).

The units of `worldmar_units`, under the names `BackendMARSampler` compiles them with, so an engine built
from a file replaces its unit one for one: `mar_condition` (once per frame), `mar_step` (every MAR
iteration: same shapes, only the hidden-token mask changes) and `mar_head` at the largest group of the
reveal schedule (every group is padded to it). With them, `worldmar_tick_exports` adds the Oasis VAE
decoder the tick decodes with (`vae_decoder`, as in the Oasis world).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from omegaconf import DictConfig
from torch import nn

from engine.backends.export import ExportSpec
from engine.families.oasis.exports import vae_decoder_spec
from engine.families.oasis.vae import OasisVAE
from engine.families.worldmar.mar import largest_group
from engine.families.worldmar.masks import mask_from_orders, padding_mask
from engine.families.worldmar.model import ACTION_DIM, PLUCKER_DIM, WorldMAR
from engine.families.worldmar.units import MARCondition, MARHead, MARStep


def mar_inputs(model: WorldMAR, frames: int, batch: int, hidden_count: int,
               seed: int = 0) -> dict[str, tuple[torch.Tensor, ...]]:
    """Example inputs of the three calls: `hidden_count` target tokens hidden in a random order."""
    gen = torch.Generator().manual_seed(seed)
    h, w = model.grid
    p = model.patch_size
    latents = torch.randn((batch, frames, h * w * p * p, model.vae_embed_dim), generator=gen)
    x = model.tokens(latents.to(model.device)).to(model.dtype)
    x[:, 0] = 0
    nframes = torch.full((batch,), frames, dtype=torch.long, device=model.device)
    condition = (torch.rand((batch, ACTION_DIM), generator=gen).to(model.device, model.dtype),
                 torch.randn((batch, frames, h, w, PLUCKER_DIM), generator=gen).to(model.device, model.dtype),
                 -torch.arange(frames, device=model.device).repeat(batch, 1), nframes)
    with torch.no_grad():
        cond = model.condition(*condition)
    orders = torch.rand((batch, h * w), generator=gen).argsort(dim=-1).to(model.device)
    step = (x, cond.action, cond.frames, mask_from_orders(orders, hidden_count), padding_mask(nframes, frames))
    return {"condition": condition, "step": step}


def worldmar_exports(model: WorldMAR, frames: int, batch: int = 1, mar_iters: int = 4) -> list[ExportSpec]:
    """The MAR frame's calls at T = `frames` (target + previous + memory frames) and batch `batch`, the head
    at `batch` times the largest group of `mar_iters` iterations."""
    tokens = model.frame_tokens
    inputs = mar_inputs(model, frames, batch, hidden_count=tokens)
    rows = batch * largest_group(tokens, mar_iters)
    gen = torch.Generator().manual_seed(1)
    head_inputs = (torch.randn((rows, model.token_dim), generator=gen).to(model.device, model.dtype),
                   torch.full((rows,), int(model.diffloss.gen_diffusion.timestep_map[-1]), device=model.device),
                   torch.randn((rows, model.diffloss.net.cond_embed.in_features), generator=gen).to(
                       model.device, model.dtype))
    return [
        ExportSpec("mar_condition", "worldmar", MARCondition(model), inputs["condition"],
                   ["actions", "plucker", "timestamps", "batch_nframes"], ["action", "frames"]),
        ExportSpec("mar_step", "worldmar", MARStep(model), inputs["step"],
                   ["x", "action", "frames", "hidden", "padding"], ["conditions"]),
        ExportSpec("mar_head", "worldmar", MARHead(model), head_inputs, ["x", "t", "c"], ["out"]),
    ]


def worldmar_tick_exports(model: WorldMAR, vae: OasisVAE, mar_iters: int, batch: int = 1,
                          seed: int = 2) -> list[ExportSpec]:
    """Every call of a WorldMAR world's tick at its play shapes: the MAR units (T = the model's num_frames)
    and the VAE decoder of one frame's latent tokens."""
    return [*worldmar_exports(model, model.num_frames, batch, mar_iters),
            vae_decoder_spec(vae, torch.Generator().manual_seed(seed), batch)]


def world_exports(cfg: DictConfig, networks: Mapping[str, nn.Module]) -> list[ExportSpec]:
    """A WorldMAR world's tick units at its MAR iterations, and the VAE decoder."""
    return worldmar_tick_exports(networks["worldmar"], networks["vae"], int(cfg.sampler.mar_iters))
