"""Build a world's networks from its config, one module per checkpoint role."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from engine.checkpoints.verify import FileReport, verify_files
from engine.errors import ConfigError, EngineError, first_line
from engine.families import world_module


def network_classes(cfg: DictConfig) -> dict[str, type[nn.Module]]:
    """Checkpoint role -> module class for the world's family."""
    return world_module(cfg.family).NETWORKS


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
    """Networks keyed by checkpoint role, in eval mode; on the meta device nothing is allocated.

    What a constructor refuses (sizes that do not fit together: heads that do not divide a width, group norms,
    list lengths) is a one-line ConfigError naming `networks.<role>`."""
    networks = {}
    for role, cls in network_classes(cfg).items():
        kwargs = network_kwargs(cfg, role)
        try:
            with torch.device(device):
                module = cls(**kwargs)
        except (ValueError, TypeError, RuntimeError, ZeroDivisionError, AssertionError, EngineError) as exc:
            raise ConfigError(f"world '{cfg.get('name')}': networks.{role} cannot be built with these sizes "
                              f"({first_line(exc)})") from None
        networks[role] = module.to(dtype=dtype).eval().requires_grad_(False)
    return networks


def weight_bytes(networks: Mapping[str, nn.Module], dtype: torch.dtype) -> int:
    """Bytes the networks' parameters and buffers take in `dtype` (built on the meta device, nothing allocated)."""
    return sum(tensor.numel() * (dtype.itemsize if tensor.is_floating_point() else tensor.element_size())
               for module in networks.values() for tensor in module.state_dict(keep_vars=True).values())


def checkpoint_prefix(world_cfg: DictConfig, role: str) -> str | None:
    """Key prefix of role's tensors inside its file (`checkpoints.prefixes.<role>`), e.g. `denoiser.`."""
    prefixes = world_cfg.checkpoints.get("prefixes") or {}
    return prefixes.get(role) or None


def verify_world(world_cfg: DictConfig, files: Mapping[str, str | Path]) -> list[FileReport]:
    """Check each {role: file} against the world's networks, built on the meta device."""
    networks = build_networks(world_cfg, "meta")
    ignored = getattr(world_module(world_cfg.family), "IGNORED_KEY_PREFIXES", {})
    return verify_files(networks, files, {role: checkpoint_prefix(world_cfg, role) for role in networks},
                        {role: tuple(prefixes) for role, prefixes in ignored.items()},
                        owner=f"world '{world_cfg.get('name')}'")
