"""Build a world's networks from its config, one module per checkpoint role."""

from __future__ import annotations

import inspect

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from engine.errors import ConfigError
from engine.families import family_module


def network_classes(cfg: DictConfig) -> dict[str, type[nn.Module]]:
    """Checkpoint role -> module class for the world's family."""
    return family_module(cfg.family).NETWORKS


def network_kwargs(cfg: DictConfig, role: str) -> dict:
    """Constructor arguments of network `role`, checked against the class signature."""
    cls = network_classes(cfg)[role]
    kwargs = OmegaConf.to_container(cfg.networks.get(role, {}), resolve=True)
    accepted = set(inspect.signature(cls).parameters)
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ConfigError(f"world '{cfg.name}': networks.{role} has unknown keys {unknown}; "
                          f"{cls.__name__} accepts {sorted(accepted)}")
    return kwargs


def build_networks(cfg: DictConfig, device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32) -> dict[str, nn.Module]:
    """Networks keyed by checkpoint role, in eval mode; on the meta device nothing is allocated."""
    networks = {}
    for role, cls in network_classes(cfg).items():
        kwargs = network_kwargs(cfg, role)
        with torch.device(device):
            module = cls(**kwargs)
        networks[role] = module.to(dtype=dtype).eval().requires_grad_(False)
    return networks
