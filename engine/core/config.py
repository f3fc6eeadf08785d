"""World configs: named bundles under assets/worlds/, or a user's own YAML file (OmegaConf)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from engine.errors import ConfigError
from engine.families import world_kinds

WORLDS_DIR = Path(__file__).resolve().parents[2] / "assets" / "worlds"
REQUIRED_KEYS = ("family", "checkpoints.files", "networks", "sampler")


def available_worlds() -> list[str]:
    return sorted(p.stem for p in WORLDS_DIR.glob("*.yaml"))


def load_world_config(name_or_path: str | Path, overrides: Sequence[str] = ()) -> DictConfig:
    """Load a world by name (`minecraft`) or from a YAML path; sets `name` and `source_dir`.

    `overrides` are OmegaConf dotlist entries (`game=Pong`, `sampler.num_steps=5`) applied on top."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = WORLDS_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ConfigError(f"unknown world '{name_or_path}': expected one of {', '.join(available_worlds())} "
                              "or a path to a world .yaml file")
    if not path.is_file():
        raise ConfigError(f"world config {path} does not exist")
    try:
        cfg = OmegaConf.load(path)
    except (OmegaConfBaseException, ValueError, OSError) as exc:
        raise ConfigError(f"world config {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"world config {path} must be a mapping, found {type(cfg).__name__}")
    if overrides:
        cfg = OmegaConf.merge(cfg, _dotlist(overrides, path))
    for key in REQUIRED_KEYS:
        if OmegaConf.select(cfg, key) is None:
            raise ConfigError(f"world config {path} lacks the required key '{key}'")
    if cfg.family not in world_kinds():
        raise ConfigError(f"world config {path}: family '{cfg.family}' is not one of {', '.join(world_kinds())}")
    cfg.setdefault("name", path.stem)
    cfg.source_dir = str(path.resolve().parent)
    return cfg


def _dotlist(entries: Sequence[str], path: Path) -> DictConfig:
    for entry in entries:
        if "=" not in entry or not entry.partition("=")[0].strip():
            raise ConfigError(f"world setting '{entry}' for {path}: expected KEY=VALUE (e.g. game=Pong)")
    try:
        return OmegaConf.from_dotlist(list(entries))
    except (OmegaConfBaseException, ValueError) as exc:
        raise ConfigError(f"world settings {list(entries)} for {path}: {str(exc).splitlines()[0]}") from None
