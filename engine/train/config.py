"""Training configs: `engine/train/configs/<name>.yaml` or a path, OmegaConf, dotlist overrides on top.

Every config is checked against its family's schema (`Family.train_schemas`, engine.train.schema) with the
overrides on top; the defaults of `optim`, `train` and `distributed` (the schema's) fill in what a
config leaves out. Paths inside a config are relative to the working directory (run from the project root).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from engine.core.config import merge_overrides, override_source
from engine.core.schema import validate
from engine.core.yaml_file import read_yaml_mapping
from engine.errors import ConfigError, display_path
from engine.families import recipe_kinds, train_schema
from engine.train.schema import Distributed, Optim, Train

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"


def defaults() -> dict:
    """What a training config leaves out."""
    return {"seed": 0, "output_dir": "runs/${name}", "init": {}, "optim": asdict(Optim()), "train": asdict(Train()),
            "distributed": asdict(Distributed()), "world": {}}


def available_configs() -> list[str]:
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml"))


def config_path(name_or_path: str | Path) -> Path:
    """A path to a YAML file as given, else `configs/<name>.yaml`."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"training config {path} does not exist")
        return path
    named = CONFIGS_DIR / f"{name_or_path}.yaml"
    if not named.is_file():
        raise ConfigError(f"unknown training config '{name_or_path}': expected one of "
                          f"{', '.join(available_configs())} or a path to a .yaml file")
    return named


def load_train_config(name_or_path: str | Path, overrides: Sequence[str] = ()) -> DictConfig:
    path = config_path(name_or_path)
    source = f"training config {display_path(path)}"
    loaded = read_yaml_mapping(path, "training config")
    family = loaded.get("family")
    if family is None:
        raise ConfigError(f"{source} lacks the required key 'family' (one of {', '.join(recipe_kinds())})")
    if family not in recipe_kinds():
        raise ConfigError(f"{source}: family '{family}' is not one of {', '.join(recipe_kinds())}")
    schema = train_schema(str(family))
    cfg = _with_defaults(loaded, path, source)
    if overrides:
        cfg = merge_overrides(cfg, overrides, source, "override", "train.steps=100")
    validate(cfg, schema, override_source(source, overrides, "override"))
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{source}: {str(exc).splitlines()[0]}") from None
    return cfg


def _with_defaults(loaded: DictConfig, path: Path, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(OmegaConf.create(defaults()), {"name": path.stem}, loaded)
    except (OmegaConfBaseException, ValueError, TypeError) as exc:
        raise ConfigError(f"{source}: {str(exc).splitlines()[0]}") from None
