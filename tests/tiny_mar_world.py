"""A small playable WorldMAR world for tests: the fixture-size WorldMAR (model_small, reference random
weights) and an Oasis VAE of the fixture VAE's widths but WorldMAR's latent geometry (model_small's
img_height x img_width frames, patched to its vae_seq_h x vae_seq_w x vae_embed_dim latents: 360x640, patch 20,
18x32x16 in the public set), with seeded random weights. The fixture VAE itself (oasis/vae.json) cannot feed
this model: WorldMAR hard-codes its latent grid."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from PIL import Image
from safetensors.torch import save_model

from engine.families.oasis.vae import OasisVAE
from engine.families.worldmar.model import REFERENCE_TRAINER_KWARGS
from tests.conftest import read_json


def worldmar_vae_kwargs(oasis_dir: Path, model_kwargs: dict) -> dict:
    """The fixture VAE's widths and depths at the frame size and patch that give WorldMAR's latent grid."""
    patch = model_kwargs["img_height"] // model_kwargs["vae_seq_h"]
    return read_json(oasis_dir / "vae.json")["kwargs"] | {
        "latent_dim": model_kwargs["vae_embed_dim"], "patch_size": patch,
        "input_height": model_kwargs["vae_seq_h"] * patch, "input_width": model_kwargs["vae_seq_w"] * patch}


def make_tiny_mar_world(folder: Path, fixtures_dir: Path, capacity: int = 32, keep_recent: int = 2,
                        points: int = 2000, mar_iters: int = 4) -> Path:
    """Write VAE weights, a prompt image and a world yaml into `folder`; returns the yaml path."""
    folder.mkdir(parents=True, exist_ok=True)
    mar_dir = fixtures_dir / "worldmar"
    model_kwargs = read_json(mar_dir / "model_small.json")["constructor_kwargs"]
    network = {k: v for k, v in model_kwargs.items() if k not in REFERENCE_TRAINER_KWARGS} | {"reference_compat": True}
    vae_kwargs = worldmar_vae_kwargs(fixtures_dir / "oasis", model_kwargs)
    torch.manual_seed(4321)
    vae = OasisVAE(**vae_kwargs)
    for param in vae.parameters():
        param.data.normal_(0, 0.05)
    save_model(vae, str(folder / "vae.safetensors"))
    height, width = vae_kwargs["input_height"], vae_kwargs["input_width"]
    ys, xs = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    image = torch.stack((ys, xs, (ys + xs) / 2), dim=-1).mul(255).to(torch.uint8).numpy()
    Image.fromarray(image).save(folder / "prompt.png")
    prev = 1
    config = {
        "name": "tiny-mar",
        "family": "worldmar",
        "checkpoints": {"repo": "local/none", "files": {"worldmar": str(mar_dir / "model_small.safetensors"),
                                                        "vae": str(folder / "vae.safetensors")}},
        "networks": {"worldmar": network, "vae": vae_kwargs},
        "sampler": {"mar_iters": mar_iters, "diffusion_steps": None},
        "memory": {"capacity": capacity, "keep_recent": keep_recent, "num_prev_frames": prev,
                   "num_mem_frames": network["num_frames"] - 1 - prev, "points": points, "point_radius": 30.0,
                   "min_overlap": 0.0, "retrieval_backend": "torch"},
        "spawn_pose": [5.0, 64.0, -3.0, 10.0, 30.0],
        "prompt": {"frames": 1, "file": "prompt.png"},
        "actions": {"keymap": "minecraft"},
        "fps": 20,
    }
    path = folder / "tiny_mar.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
