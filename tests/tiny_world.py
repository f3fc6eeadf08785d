"""A small playable Oasis world for tests: the fixture VAE (reference weights) plus a DiT of the
fixture DiT's width/depth whose latent geometry matches that VAE, with seeded random weights."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from PIL import Image
from safetensors.torch import save_model

from engine.families.oasis.dit import OasisDiT
from tests.conftest import read_json


def dit_patch_size(rows: int, cols: int) -> int:
    """The DiT patch for a latent grid: 2 (Oasis') where it divides the grid, else 1."""
    return 2 if rows % 2 == 0 and cols % 2 == 0 else 1


def make_tiny_oasis_world(folder: Path, oasis_dir: Path, max_frames: int = 4, ddim_steps: int = 3) -> Path:
    """Write weights, a prompt image and a world yaml into `folder`; returns the yaml path."""
    folder.mkdir(parents=True, exist_ok=True)
    vae_kwargs = read_json(oasis_dir / "vae.json")["kwargs"]
    dit_kwargs = read_json(oasis_dir / "dit.json")["kwargs"]
    patch = vae_kwargs["patch_size"]
    rows, cols = vae_kwargs["input_height"] // patch, vae_kwargs["input_width"] // patch
    dit_patch = dit_patch_size(rows, cols)
    dit_kwargs |= {"in_channels": vae_kwargs["latent_dim"], "input_h": rows, "input_w": cols,
                   "patch_size": dit_patch, "max_frames": max_frames}
    torch.manual_seed(1234)
    dit = OasisDiT(**dit_kwargs)
    for param in dit.parameters():
        if param.requires_grad:
            param.data.normal_(0, 0.02 if param.dim() > 1 else 0.05)
    save_model(dit, str(folder / "dit.safetensors"))
    height, width = vae_kwargs["input_height"], vae_kwargs["input_width"]
    ys, xs = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    image = torch.stack((ys, xs, (ys + xs) / 2), dim=-1).mul(255).to(torch.uint8).numpy()
    Image.fromarray(image).save(folder / "prompt.png")
    config = {
        "name": "tiny-oasis",
        "family": "oasis",
        "checkpoints": {"repo": "local/none", "files": {"dit": "dit.safetensors",
                                                        "vae": str(oasis_dir / "vae.safetensors")}},
        "networks": {"dit": dit_kwargs, "vae": vae_kwargs},
        "latent_scale": 0.07843137255,
        "sampler": {"ddim_steps": ddim_steps, "stabilization_level": 15, "noise_abs_max": 20.0,
                    "max_noise_level": 1000, "max_frames": max_frames},
        "prompt": {"frames": 1, "file": "prompt.png"},
        "actions": {"keymap": "minecraft"},
        "fps": 20,
    }
    path = folder / "tiny_world.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
