"""World configs: named bundles under assets/worlds/, or a user's own YAML file (OmegaConf).

Every world config is checked against its family's schema (`Family.schemas`, engine.core.schema) when it
loads, with the `--set` overrides on top, so an error names the override or the file, the key, the value and
what was expected.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from engine.core.schema import Source, validate
from engine.core.yaml_file import read_yaml_mapping
from engine.errors import ConfigError, display_path
from engine.families import world_kinds, world_schema

WORLDS_DIR = Path(__file__).resolve().parents[2] / "assets" / "worlds"


def available_worlds() -> list[str]:
    return sorted(p.stem for p in WORLDS_DIR.glob("*.yaml"))


def world_path(name_or_path: str | Path) -> Path:
    """The yaml of a world name (`minecraft`), or the path as given."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = WORLDS_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ConfigError(f"unknown world '{name_or_path}': expected one of {', '.join(available_worlds())} "
                              "or a path to a world .yaml file")
    if not path.is_file():
        raise ConfigError(f"world config {path} does not exist")
    return path


class World(NamedTuple):
    """A loaded world config and its typed schema instance (frame size, the key `--steps` sets, ...)."""

    cfg: DictConfig
    settings: Any


def load_world(name_or_path: str | Path, overrides: Sequence[str] = ()) -> World:
    """Load a world by name (`minecraft`) or from a YAML path, with the OmegaConf dotlist `overrides` (`game=Pong`,
    `sampler.ddim_steps=5`) on top, checked against its family's schema; sets `name` and `source_dir`. An error
    names the override that set the bad key, else the file."""
    path = world_path(name_or_path)
    source = f"world config {display_path(path)}"
    cfg = read_yaml_mapping(path, "world config")
    if overrides:
        cfg = merge_overrides(cfg, overrides, source, "--set")
    settings = check_world(cfg, source, overrides)
    cfg.setdefault("name", path.stem)
    cfg.source_dir = str(path.resolve().parent)
    return World(cfg, settings)


def load_world_config(name_or_path: str | Path, overrides: Sequence[str] = ()) -> DictConfig:
    """The config of `load_world`."""
    return load_world(name_or_path, overrides).cfg


def check_world(cfg: DictConfig, source: str, overrides: Sequence[str] = (), flag: str = "--set") -> Any:
    """The typed schema instance of world config `cfg` (a ConfigError naming `source` where it is invalid)."""
    kinds = world_kinds()
    family = cfg.get("family")
    if family is None:
        raise ConfigError(f"{source} lacks the required key 'family' (one of {', '.join(kinds)})")
    if family not in kinds:
        close = difflib.get_close_matches(str(family), kinds, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"{source}: family '{family}' is not one of {', '.join(kinds)}{hint}")
    return validate(cfg, world_schema(str(family)), override_source(source, overrides, flag))


def world_settings(cfg: DictConfig) -> Any:
    """The typed schema instance of a loaded world config (its frame size, the key `--steps` sets, ...)."""
    return check_world(cfg, f"world '{cfg.get('name')}'")


def check_steps(cfg: DictConfig, steps: int) -> None:
    """`--steps N` is a number of steps the world supports (its schema's range of the key it sets)."""
    where = f"--steps {steps} (world '{cfg.get('name')}')"
    key = world_settings(cfg).steps_key()
    if key is None:
        raise ConfigError(f"{where}: world '{cfg.get('name')}' ({cfg.family}) has no denoising steps")
    if isinstance(steps, bool) or not isinstance(steps, int):
        raise ConfigError(f"{where}: expected a whole number of steps")
    check_world(OmegaConf.merge(cfg, OmegaConf.from_dotlist([f"{key}={steps}"])), where)


def override_source(source: str, overrides: Sequence[str], flag: str) -> Source:
    """How an error names where a bad key came from: the override that set it, else the file."""
    if not overrides:
        return source

    def name(key: str) -> str:
        for entry in overrides:
            given = entry.partition("=")[0].strip()
            if key == given or key.startswith(given + ".") or given.startswith(key + "."):
                return f"{flag} {entry} ({source})"
        return source

    return name


def merge_overrides(cfg: DictConfig, entries: Sequence[str], source: str, flag: str,
                    example: str = "game=Pong") -> DictConfig:
    """`cfg` with the dotlist `entries` (KEY=VALUE) merged on top."""
    for entry in entries:
        key = entry.partition("=")[0].strip()
        if "=" not in entry or not key:
            raise ConfigError(f"{flag} {entry} for {source}: expected KEY=VALUE (e.g. {example})")
        if key[0] in "+~":
            raise ConfigError(f"{flag} {entry} for {source}: write {key[1:]}={entry.partition('=')[2]} "
                              f"(there is no '{key[0]}' prefix: every valid key may be set as it is)")
    try:
        for entry in entries:
            cfg = _merge_one(cfg, entry)
    except (OmegaConfBaseException, ValueError, TypeError) as exc:
        raise ConfigError(f"{flag} {' '.join(entries)} for {source}: {str(exc).splitlines()[0]}") from None
    return cfg


def _merge_one(cfg: DictConfig, entry: str) -> DictConfig:
    """`cfg` with one KEY=VALUE merged on top; a list or a value given for a mapping replaces it (and the
    schema then says what the key must be)."""
    given = OmegaConf.from_dotlist([entry])
    try:
        return OmegaConf.merge(cfg, given)
    except TypeError:
        key = entry.partition("=")[0].strip()
        replaced = cfg.copy()
        OmegaConf.update(replaced, key, OmegaConf.select(given, key), merge=False)
        return replaced
