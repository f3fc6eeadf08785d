"""The registry of world families: one line per family package below.

A family package (`engine/families/<name>/`) holds everything of one family (networks, sampler, backend units,
exports, sessions, training recipe, bench) and declares in its `__init__.py` what it offers, as a `Family`
whose entries are import paths, so that naming a family imports nothing heavy:

- `worlds`: world kind (the `family:` key of a world yaml) -> the module of its sessions, which defines
  `NETWORKS` (checkpoint role -> module class or factory) and `open_world(cfg, networks, options) -> Session`,
  optionally `load_weights(module, path, prefix)` and `IGNORED_KEY_PREFIXES` ({role: key prefixes of other
  networks' tensors in that role's file}).
- `recipes`: training config `family:` -> the module with `build(cfg, device) -> Recipe` (engine.train.recipes).
- `exports`: world kind -> `"module:function"`, `(cfg, networks) -> list[ExportSpec]` for build_trt.py.
- `benches`: `python -m bench NAME` -> `"module:function"`, `(args, device, dtype) -> dict`, and the module's
  `print_table(result)` prints it.
- `collectors`: `python -m engine.train.collect --world NAME` -> `"module:main"`, a `main(argv) -> int` that
  records training data from a real game.
- `schemas`: world kind -> `"module:Class"`, the dataclass (an `engine.core.world_schema.WorldSchema`) a world
  yaml of that kind is checked against when it loads (engine.core.schema).
- `train_schemas`: training config `family:` -> `"module:Class"`, the dataclass (an
  `engine.train.schema.TrainSchema`) a training config of that family is checked against.

Generic layers (core, app, bench, build_trt) iterate over this registry and never name a family.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

FAMILIES: tuple[str, ...] = (
    "oasis",
    "diamond",
    "worldmar",
    "vizdoom",
    "doom",
)


@dataclass(frozen=True)
class Family:
    """What a family package offers; every value is an import path (`module` or `module:attribute`)."""

    worlds: Mapping[str, str]
    recipes: Mapping[str, str] = field(default_factory=dict)
    exports: Mapping[str, str] = field(default_factory=dict)
    benches: Mapping[str, str] = field(default_factory=dict)
    collectors: Mapping[str, str] = field(default_factory=dict)
    schemas: Mapping[str, str] = field(default_factory=dict)
    train_schemas: Mapping[str, str] = field(default_factory=dict)


def family(name: str) -> Family:
    return importlib.import_module(f"{__name__}.{name}").FAMILY


def _entries(section: str) -> dict[str, str]:
    """{name: import path} of one section over every family, in registry order."""
    return {name: path for family_name in FAMILIES for name, path in getattr(family(family_name), section).items()}


def resolve(path: str) -> Any:
    """`module` -> the module, `module:attribute` -> that attribute."""
    module, _, attribute = path.partition(":")
    loaded = importlib.import_module(module)
    return getattr(loaded, attribute) if attribute else loaded


def world_kinds() -> list[str]:
    """Every value a world yaml's `family:` may take."""
    return list(_entries("worlds"))


def world_module(kind: str) -> ModuleType:
    """The sessions module of world kind `kind` (NETWORKS, open_world, ...)."""
    return resolve(_entries("worlds")[kind])


def world_schema(kind: str) -> type:
    """The schema dataclass world yamls of kind `kind` are checked against."""
    return resolve(_entries("schemas")[kind])


def train_schema(kind: str) -> type:
    """The schema dataclass training configs of family `kind` are checked against."""
    return resolve(_entries("train_schemas")[kind])


def recipe_kinds() -> list[str]:
    return list(_entries("recipes"))


def recipe_module(kind: str) -> ModuleType:
    return resolve(_entries("recipes")[kind])


def export_function(kind: str) -> Callable | None:
    """build_trt's export specs of world kind `kind`, or None where the family exports nothing."""
    path = _entries("exports").get(kind)
    return None if path is None else resolve(path)


def benches() -> dict[str, str]:
    """`python -m bench NAME` -> import path of its run function, for every family."""
    return _entries("benches")


def collectors() -> dict[str, str]:
    """`python -m engine.train.collect --world NAME` -> import path of its `main(argv)`, for every family."""
    return _entries("collectors")
