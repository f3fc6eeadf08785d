"""Training the Doom world model (`python -m engine.train --config doom`) on recordings of the real game.

The world yaml it writes plays the EMA weights with the same network sizes, memory and sampler settings.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from engine.checkpoints.loading import load_into
from engine.core.config import WORLDS_DIR
from engine.families.diamond.loss import SigmaDistribution
from engine.families.doom.data import DoomItems
from engine.families.doom.loss import ContextNoise, DoomDenoising
from engine.families.doom.network import DoomWorldModel
from engine.families.doom.recall import Recall
from engine.train.data import find_episodes
from engine.train.recipes.common import load_initial_weights, write_world_yaml
from engine.train.rng import BatchRandom

ROLE = "world_model"


class DoomRecipe:
    def __init__(self, cfg: DictConfig, device: torch.device) -> None:
        self.cfg = cfg
        self.network_cfg = OmegaConf.to_container(cfg.model[ROLE], resolve=True)
        world_model = DoomWorldModel(**self.network_cfg)
        load_initial_weights(cfg, {ROLE: world_model}, load=load_keeping_new_parts)
        loss = OmegaConf.to_container(cfg.get("loss") or OmegaConf.create({}), resolve=True)
        self.model = DoomDenoising(world_model, SigmaDistribution(**loss.get("sigma_distribution", {})),
                                   ContextNoise(**{k: tuple(v) if isinstance(v, list) else v
                                                   for k, v in loss.get("context_noise", {}).items()}),
                                   denoising_weight=float(loss.get("denoising_weight", 1.0)),
                                   depth_weight=float(loss.get("depth_weight", 1.0)),
                                   blend_weight=float(loss.get("blend_weight", 0.0)),
                                   play_sampler=self.play_world().sampler)
        data = OmegaConf.to_container(cfg.data, resolve=True)
        self.recall_cfg = data.get("recall", {})
        mcfg = world_model.cfg
        self.dataset = DoomItems(find_episodes(list(data["paths"])), context=mcfg.context, memory=mcfg.memory,
                                 recall=Recall(**self.recall_cfg), pose_scale=mcfg.pose_scale,
                                 memory_dropout=float(data.get("memory_dropout", 0.2)),
                                 stride=int(data.get("stride", 2)), depth=world_model.depth_net is not None,
                                 reproject=mcfg.reproject_memory, rollout=int(data.get("rollout", 0)),
                                 seed=int(cfg.seed))

    def play_world(self) -> DictConfig:
        """The world yaml the run writes, before its checkpoint and network sizes: the sampler it plays with."""
        return OmegaConf.merge(OmegaConf.load(WORLDS_DIR / "doom.yaml"), self.cfg.get("world") or {})

    def prepare(self, batch: dict[str, torch.Tensor], rng: BatchRandom) -> dict[str, torch.Tensor]:
        return batch

    def write_world(self, run_dir: Path, weights: Path) -> Path:
        """The doom world yaml with this checkpoint, the trained sizes and the recall settings."""
        world = OmegaConf.to_container(OmegaConf.load(WORLDS_DIR / "doom.yaml"), resolve=False)
        world |= {"name": str(self.cfg.name), "networks": {ROLE: self.network_cfg}}
        world["checkpoints"] = {"files": {ROLE: f"./{weights.as_posix()}"}, "prefixes": {ROLE: f"{ROLE}."}}
        world["memory"] = {**world.get("memory", {}), "recall": self.recall_cfg}
        return write_world_yaml(run_dir, world, self.cfg.get("world"))


NEW_PARTS = ("depth_net", "blend_net")  # networks a trained world model may gain by a later stage


def load_keeping_new_parts(module: DoomWorldModel, state: dict[str, torch.Tensor], prefix: str | None = None
                           ) -> None:
    """Strict loading, except that weights from before the depth or blend network (no `depth_net.` or
    `blend_net.` key) leave that new network as initialised: a world model gains one by a later stage."""
    fresh = {}
    for name in NEW_PARTS:
        part = getattr(module, name)
        if part is not None and not any(key.removeprefix(prefix or "").startswith(f"{name}.") for key in state):
            fresh |= {f"{prefix or ''}{name}.{key}": value for key, value in part.state_dict().items()}
    load_into(module, {**state, **fresh}, prefix=prefix)


def build(cfg: DictConfig, device: torch.device) -> DoomRecipe:
    return DoomRecipe(cfg, device)
