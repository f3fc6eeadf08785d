"""Which networks of a world `build_trt.py` exports, in which play configuration, by world family."""

from __future__ import annotations

from collections.abc import Mapping

from omegaconf import DictConfig
from torch import nn

from engine.backends.export import ExportSpec
from engine.errors import ConfigError
from engine.families.diamond.exports import diamond_exports
from engine.families.oasis.exports import oasis_exports
from engine.families.worldmar.exports import worldmar_tick_exports


def _csgo_exports(cfg: DictConfig, networks: Mapping[str, nn.Module]) -> list[ExportSpec]:
    height, width = (int(v) for v in cfg.frame_size)
    factor = int(cfg.networks.upsampler.upsampling_factor)
    preset = cfg.sampler.presets[cfg.sampler.preset]
    return diamond_exports(networks, {"denoiser": (height // factor, width // factor), "upsampler": (height, width)},
                           sigma_cond={"denoiser": float(preset.next_obs.get("s_cond", 0.0)) > 0,
                                       "upsampler": float(preset.upsampling.get("s_cond", 0.0)) > 0})


def world_exports(cfg: DictConfig, networks: Mapping[str, nn.Module]) -> list[ExportSpec]:
    """The export specs of every network a tick of this world calls, with example inputs of its play shapes."""
    family = str(cfg.family)
    if family == "oasis":
        return oasis_exports(networks["dit"], networks["vae"])
    if family == "atari":
        size = int(cfg.env.size)
        return diamond_exports(networks, {"denoiser": (size, size)})
    if family == "csgo":
        return _csgo_exports(cfg, networks)
    if family == "worldmar":
        return worldmar_tick_exports(networks["worldmar"], networks["vae"], int(cfg.sampler.mar_iters))
    raise ConfigError(f"world '{cfg.name}': build_trt.py has no export for family '{family}'")
