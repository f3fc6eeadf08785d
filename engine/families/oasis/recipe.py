"""Oasis: diffusion forcing of the DiT on VAE latents of video clips with their VPT actions.

Frames are encoded by the frozen VAE (posterior mean * latent_scale, OasisSession.encode's layout), either
here on the fly or ahead of time into a latent cache (`python -m engine.train.data.latent_cache`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from engine.checkpoints.loading import load_into
from engine.errors import ConfigError
from engine.families.oasis.dit import OasisDiT
from engine.families.oasis.loss import OasisDiffusionForcing
from engine.families.oasis.vae import OasisVAE
from engine.train.data import LatentCache, OasisClips, find_episodes
from engine.train.data.sampling import OASIS_LATENT_SCALE
from engine.train.recipes.common import load_initial_weights, resolve_weights, write_prompt, write_world_yaml
from engine.train.rng import BatchRandom


def dit_kwargs(cfg: DictConfig, vae: dict[str, Any]) -> dict[str, Any]:
    """The DiT's arguments; its latent geometry defaults to (and must equal) the VAE's."""
    patch = int(vae["patch_size"])
    geometry = {"input_h": int(vae["input_height"]) // patch, "input_w": int(vae["input_width"]) // patch,
                "in_channels": int(vae["latent_dim"])}
    kwargs = geometry | OmegaConf.to_container(cfg.model.dit, resolve=True)
    wrong = {key: kwargs[key] for key, value in geometry.items() if kwargs[key] != value}
    if wrong:
        raise ConfigError(f"model.dit {wrong} does not match the VAE's latents {geometry}")
    return kwargs


def encode_latents(vae: OasisVAE, frames: torch.Tensor, scale: float) -> torch.Tensor:
    """Frames (B, T, 3, H, W) in [-1, 1] -> latents (B, T, C, h, w): posterior mean * scale."""
    b, t = frames.shape[:2]
    mean, _ = vae.encode(frames.flatten(0, 1).to(next(vae.parameters()).dtype))
    rows, cols = vae.grid
    return (mean.float() * scale).transpose(1, 2).reshape(b, t, -1, rows, cols)


class OasisRecipe:
    def __init__(self, cfg: DictConfig, device: torch.device) -> None:
        self.cfg = cfg
        self.scale = float(cfg.model.get("latent_scale", OASIS_LATENT_SCALE))
        self.vae_kwargs = OmegaConf.to_container(cfg.model.vae, resolve=True)
        self.dit_kwargs = dit_kwargs(cfg, self.vae_kwargs)
        self.vae_file = resolve_weights(cfg, "vae", str(cfg.model.vae_weights), cfg.model.get("vae_repo"),
                                        key="model.vae_weights")
        dit = OasisDiT(**self.dit_kwargs)
        load_initial_weights(cfg, {"dit": dit})
        loss = cfg.get("loss") or {}
        self.timesteps = int(loss.get("timesteps", 1000))
        self.model = OasisDiffusionForcing(dit, self.timesteps, float(loss.get("snr_clip", 5.0)),
                                           float(loss.get("noise_abs_max", 20.0)))
        data = cfg.data
        self.episodes = find_episodes(list(data.paths))
        cache = LatentCache(Path(str(data.cache))) if data.get("cache") else None
        self.vae = None
        if cache is None:
            self.vae = OasisVAE(**self.vae_kwargs)
            load_into(self.vae, self.vae_file)
            self.vae = self.vae.to(device).eval().requires_grad_(False)
        image_size = (int(self.vae_kwargs["input_height"]), int(self.vae_kwargs["input_width"]))
        self.dataset = OasisClips(self.episodes, int(data.num_frames), cache=cache, latent_scale=self.scale,
                                  stride=int(data.get("stride", 1)), max_noise_level=self.timesteps,
                                  frame_size=image_size, seed=int(cfg.seed))

    def prepare(self, batch: dict[str, torch.Tensor], rng: BatchRandom) -> dict[str, torch.Tensor]:
        if "latents" not in batch:
            batch["latents"] = encode_latents(self.vae, batch.pop("frames"), self.scale)
        return batch

    def write_world(self, run_dir: Path, weights: Path) -> Path:
        world = {
            "name": str(self.cfg.name),
            "family": "oasis",
            "checkpoints": {"files": {"dit": f"./{weights.as_posix()}", "vae": str(self.vae_file)},
                            "prefixes": {"dit": "dit."}},
            "networks": {"dit": self.dit_kwargs, "vae": self.vae_kwargs},
            "latent_scale": self.scale,
            "sampler": {"ddim_steps": 10, "stabilization_level": 15, "noise_abs_max": 20.0,
                        "max_noise_level": self.timesteps, "max_frames": int(self.dit_kwargs.get("max_frames", 32))},
            "prompt": {"frames": 1},
            "actions": {"keymap": "minecraft"},
            "fps": 20,
        }
        first = next((e for e in self.episodes if e.frames is not None), None)
        if first is not None:
            world["prompt"]["file"] = write_prompt(run_dir, first.frames.read([0])[0])
        return write_world_yaml(run_dir, world, self.cfg.get("world"))


def build(cfg: DictConfig, device: torch.device) -> OasisRecipe:
    return OasisRecipe(cfg, device)
