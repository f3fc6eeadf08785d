"""DIAMOND (Atari): the EDM denoiser trained on segments of real game episodes (pixel space, no VAE).

Networks are built from the same `networks` mapping as the atari world yaml (engine/families/diamond/atari.py), so the
written world loads the checkpoint as it loads the official `atari_100k/models/<Game>.pt`. The reward/end
model and the actor-critic are not trained here (they are part of the checkpoint, frozen: their initial
weights, or `init.<role>`); the world therefore spawns from a random policy.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from engine.core.config import WORLDS_DIR
from engine.families.diamond import atari
from engine.families.diamond.loss import DiamondDenoising, SigmaDistribution
from engine.train.data import DiamondSegments, find_episodes
from engine.train.recipes.common import load_initial_weights, write_world_yaml
from engine.train.rng import BatchRandom

ROLES = ("denoiser", "rew_end_model", "actor_critic")


class DiamondRecipe:
    def __init__(self, cfg: DictConfig, device: torch.device) -> None:
        self.cfg = cfg
        self.networks_cfg = {role: OmegaConf.to_container(cfg.model[role], resolve=True) for role in ROLES}
        networks = {role: atari.NETWORKS[role](**self.networks_cfg[role]) for role in ROLES}
        load_initial_weights(cfg, networks)
        loss = cfg.get("loss") or {}
        sigmas = SigmaDistribution(**OmegaConf.to_container(loss.get("sigma_distribution") or {}, resolve=True))
        self.model = DiamondDenoising(networks.pop("denoiser"), sigmas, networks)
        context = self.model.denoiser.cfg.inner_model.num_steps_conditioning
        self.size = int(cfg.data.get("size", 64))
        self.dataset = DiamondSegments(find_episodes(list(cfg.data.paths)),
                                       context + int(loss.get("num_autoregressive_steps", 1)),
                                       frame_size=(self.size, self.size), discrete_actions=True)

    def prepare(self, batch: dict[str, torch.Tensor], rng: BatchRandom) -> dict[str, torch.Tensor]:
        return batch

    def write_world(self, run_dir: Path, weights: Path) -> Path:
        """The atari world yaml with this checkpoint for all three roles and the trained sizes."""
        world = OmegaConf.to_container(OmegaConf.load(WORLDS_DIR / "atari.yaml"), resolve=False)
        world |= {"name": str(self.cfg.name), "game": str(self.cfg.game), "networks": self.networks_cfg}
        world["checkpoints"] = {"files": dict.fromkeys(ROLES, f"./{weights.as_posix()}"),
                                "prefixes": {role: f"{role}." for role in ROLES}}
        world["env"]["size"] = self.size
        world["spawn"]["policy"] = "random"
        # the reward/end model is not trained here: its random predictions must not end episodes every few ticks
        world["episode"] = {**world.get("episode", {}), "reset_on_end": False}
        return write_world_yaml(run_dir, world, self.cfg.get("world"))


def build(cfg: DictConfig, device: torch.device) -> DiamondRecipe:
    return DiamondRecipe(cfg, device)
