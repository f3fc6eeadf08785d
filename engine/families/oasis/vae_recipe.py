"""Oasis VAE: trains the ViT autoencoder (`OasisVAE`, open-oasis' architecture at any size) on the frames of
the training episodes, for the Oasis and WorldMAR recipes to encode with (their `model.vae_weights`).

A run has no world to play: `write_world` leaves the EMA VAE at `runs/<name>/vae.safetensors` (OasisVAE's own
keys, no prefix) and `runs/<name>/reconstructions.png` (frames of the data above their reconstructions),
and returns the VAE file's path. The written VAE is rescaled so that its posterior means times
`model.latent_scale` have unit standard deviation over the training frames: the scale factor latent diffusion
measures (Rombach et al. 2022), folded into the weights, because the Oasis DiT and WorldMAR multiply the latents
by a fixed scale (the official VAE's, 0.0784) before their diffusion.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from safetensors.torch import save_model

from engine.checkpoints.loading import load_into, read_state_dict
from engine.families.oasis.vae import OasisVAE
from engine.families.oasis.vae_loss import OasisVAELoss
from engine.train.data import EpisodeFrames, find_episodes, to_model_frames
from engine.train.data.sampling import OASIS_LATENT_SCALE
from engine.train.recipes.common import load_initial_weights
from engine.train.rng import BatchRandom

VAE_FILE = "vae.safetensors"
RECONSTRUCTIONS_FILE = "reconstructions.png"
SHOWN_FRAMES = 8
SCALE_FRAMES = 256  # frames of the data the latent scale is measured on


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Images (n, 3, H, W) in [-1, 1] -> uint8 frames (n, H, W, 3)."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def encode_means(vae: OasisVAE, images: torch.Tensor, chunk: int = 32) -> torch.Tensor:
    """Images (n, 3, H, W) in [-1, 1] -> posterior means (n, N, latent_dim), `chunk` images at a time."""
    weight = next(vae.parameters())
    return torch.cat([vae.encode(part.to(weight.device, weight.dtype))[0] for part in images.split(chunk)])


@torch.no_grad()
def reconstruct(vae: OasisVAE, images: torch.Tensor) -> torch.Tensor:
    """Images (n, 3, H, W) in [-1, 1] -> their reconstructions through the posterior mean."""
    return vae.decode(encode_means(vae, images))


@torch.no_grad()
def scale_latents(vae: OasisVAE, factor: float) -> None:
    """Make the VAE's latents `factor` times larger with the same reconstructions: the posterior-mean rows of
    quant_conv times `factor`, its log-variance bias + 2 log(factor), post_quant_conv's weight / `factor`."""
    d = vae.latent_dim
    vae.quant_conv.weight[:d] *= factor
    vae.quant_conv.bias[:d] *= factor
    vae.quant_conv.bias[d:] += 2 * math.log(factor)
    vae.post_quant_conv.weight /= factor


class OasisVAERecipe:
    def __init__(self, cfg: DictConfig, device: torch.device) -> None:
        self.vae_kwargs = OmegaConf.to_container(cfg.model.vae, resolve=True)
        vae = OasisVAE(**self.vae_kwargs)
        load_initial_weights(cfg, {"vae": vae})
        loss = cfg.get("loss") or {}
        self.model = OasisVAELoss(vae, float(loss.get("kl_weight", 1e-3)), str(loss.get("reconstruction", "l1")))
        self.latent_scale = float(cfg.model.get("latent_scale", OASIS_LATENT_SCALE))
        self.episodes = find_episodes(list(cfg.data.paths))
        self.dataset = EpisodeFrames(self.episodes, stride=int(cfg.data.get("stride", 1)),
                                     frame_size=vae.image_size, seed=int(cfg.seed))

    def prepare(self, batch: dict[str, torch.Tensor], rng: BatchRandom) -> dict[str, torch.Tensor]:
        return batch

    def write_world(self, run_dir: Path, weights: Path) -> Path:
        """Write `vae.safetensors` (the VAE of checkpoint file `weights`, relative to run_dir, rescaled) and
        `reconstructions.png` into run_dir; returns the VAE file's path."""
        vae = OasisVAE(**self.vae_kwargs)
        load_into(vae, read_state_dict(run_dir / weights, prefix="vae."))
        vae = vae.to(next(self.model.parameters()).device).eval()
        picks = np.linspace(0, len(self.dataset) - 1, min(SCALE_FRAMES, len(self.dataset))).round().astype(int)
        mean = encode_means(vae, torch.stack([self.dataset[int(i)]["frames"] for i in picks]))
        scale_latents(vae, 1 / (self.latent_scale * float(mean.std())))
        path = run_dir / VAE_FILE
        tmp = path.with_name(path.name + ".tmp")
        save_model(vae.cpu(), str(tmp))
        tmp.replace(path)
        episode = self.episodes[0].require_frames()
        shown = episode.read(np.linspace(0, episode.num_frames - 1, SHOWN_FRAMES).round().astype(int).tolist())
        images = to_model_frames(shown, vae.image_size)
        rows = [np.concatenate(list(to_uint8(x)), axis=1) for x in (images, reconstruct(vae, images))]
        Image.fromarray(np.concatenate(rows, axis=0)).save(run_dir / RECONSTRUCTIONS_FILE)
        return path


def build(cfg: DictConfig, device: torch.device) -> OasisVAERecipe:
    return OasisVAERecipe(cfg, device)
