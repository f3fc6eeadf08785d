"""WorldMAR: the masked autoregressive transformer + diffusion head on Oasis-VAE latents of a target frame,
its previous frame and memory frames retrieved by view overlap (engine.train.data.WorldMarItems).

Actions reach the model in the encoding the minecraft-mar world feeds it (`engine.families.worldmar.world.
dataset_action`), so what is trained is what plays; `data.reference_compat` episodes already carry it.
`model.vae_weights: null` gives a frozen VAE with seeded random weights, written next to the checkpoint
(tests only: worldmar_tiny reads the VAE `worldmar_vae_tiny` trains, real runs encode with the Oasis VAE,
ideally through a latent cache). `init.worldmar` also reads the reference trainer's Lightning checkpoints
(their `vae.*` entries are dropped).
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import save_model

from engine.checkpoints.loading import load_into
from engine.core.config import WORLDS_DIR
from engine.families.oasis.vae import OasisVAE
from engine.families.worldmar.loss import WorldMarMasked
from engine.families.worldmar.model import WorldMAR, load_reference_checkpoint
from engine.families.worldmar.world import dataset_action
from engine.train.data import LatentCache, WorldMarItems, find_episodes
from engine.train.recipes.common import load_initial_weights, resolve_weights, write_prompt, write_world_yaml
from engine.train.rng import BatchRandom

RANDOM_VAE_FILE = "vae.safetensors"


def random_vae(kwargs: dict, seed: int) -> OasisVAE:
    """A VAE with PyTorch's default initialisation under a fixed seed: the same in every process and run."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return OasisVAE(**kwargs)


class WorldMarRecipe:
    def __init__(self, cfg: DictConfig, device: torch.device) -> None:
        self.cfg = cfg
        self.model_kwargs = OmegaConf.to_container(cfg.model.worldmar, resolve=True)
        self.vae_kwargs = OmegaConf.to_container(cfg.model.vae, resolve=True)
        worldmar = WorldMAR(**self.model_kwargs)
        load_initial_weights(cfg, {"worldmar": worldmar}, load=load_reference_checkpoint)
        self.model = WorldMarMasked(worldmar)
        data = cfg.data
        self.reference_actions = bool(data.get("reference_compat", False))
        self.episodes = find_episodes(list(data.paths), reference_compat=self.reference_actions)
        cache = LatentCache(Path(str(data.cache))) if data.get("cache") else None
        entry = cfg.model.get("vae_weights")
        self.vae_file = None if entry is None else resolve_weights(cfg, "vae", str(entry), cfg.model.get("vae_repo"),
                                                                   key="model.vae_weights")
        self.vae = None
        if cache is None:
            self.vae = random_vae(self.vae_kwargs, int(cfg.seed))
            if self.vae_file is not None:
                load_into(self.vae, self.vae_file)
            self.vae = self.vae.to(device).eval().requires_grad_(False)
        self.posterior = str(data.get("posterior", "sample"))
        self.memory = {"num_prev_frames": int(data.get("num_prev_frames", 1)),
                       "num_mem_frames": int(data.get("num_mem_frames", 2))}
        self.dataset = WorldMarItems(
            self.episodes, cache, memory_size=int(data.get("memory_size", 100)),
            memory_distance=int(data.get("memory_distance", 1000)), prev_distance=int(data.get("prev_distance", 1)),
            reference_compat=self.reference_actions, posterior=self.posterior,
            frame_size=(int(self.vae_kwargs["input_height"]), int(self.vae_kwargs["input_width"])),
            seed=int(cfg.seed), **self.memory)

    def prepare(self, batch: dict[str, torch.Tensor], rng: BatchRandom) -> dict[str, torch.Tensor]:
        if "latents" not in batch:
            frames = batch.pop("frames")
            b, t = frames.shape[:2]
            mean, logvar = self.vae.encode(frames.flatten(0, 1).to(next(self.vae.parameters()).dtype))
            latents = mean.float().unflatten(0, (b, t))
            if self.posterior == "sample":
                latents = latents + torch.exp(0.5 * logvar.float()).unflatten(0, (b, t)) * rng.normal(latents.shape[1:])
            real = torch.arange(t, device=frames.device)[None] < batch["num_non_padding_frames"][:, None]
            batch["latents"] = latents * real[:, :, None, None]
        if not self.reference_actions:
            batch["action"] = dataset_action(batch["action"])
        return batch

    def write_world(self, run_dir: Path, weights: Path) -> Path:
        """The minecraft-mar world yaml with this checkpoint, the VAE and the prompt frame and pose of the data."""
        world = OmegaConf.to_container(OmegaConf.load(WORLDS_DIR / "minecraft-mar.yaml"), resolve=False)
        vae_file = self.vae_file
        if vae_file is None:
            vae_file = run_dir / RANDOM_VAE_FILE
            if not vae_file.is_file():
                save_model(random_vae(self.vae_kwargs, int(self.cfg.seed)), str(vae_file))
        world |= {"name": str(self.cfg.name), "networks": {"worldmar": self.model_kwargs, "vae": self.vae_kwargs},
                  "checkpoints": {"files": {"worldmar": f"./{weights.as_posix()}", "vae": str(vae_file.resolve())},
                                  "prefixes": {"worldmar": "worldmar."}}}
        world["memory"] |= self.memory
        first = next((e for e in self.episodes if e.frames is not None), None)
        if first is not None:
            world["prompt"] = {"frames": 1, "file": write_prompt(run_dir, first.frames.read([0])[0])}
            world["spawn_pose"] = [float(v) for v in first.poses[0]]
        return write_world_yaml(run_dir, world, self.cfg.get("world"))


def build(cfg: DictConfig, device: torch.device) -> WorldMarRecipe:
    return WorldMarRecipe(cfg, device)
