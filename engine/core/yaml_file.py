"""Reading a config file as YAML, safely: anything but a plain mapping of plain values is one line naming the file.

Refused with the line it is on: syntax errors (tabs, bad indentation, unclosed brackets), duplicate keys,
tags that would build objects (`!!python/object:...`, any `!tag`), aliases that refer to themselves and alias
chains that expand past `MAX_VALUES` values (a "billion laughs" file is a few hundred bytes), files over
`MAX_BYTES`, and text that is not UTF-8.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from engine.errors import ConfigError, display_path

MAX_BYTES = 1 << 20
MAX_VALUES = 100_000
PLAIN_TAGS = frozenset(f"tag:yaml.org,2002:{name}" for name in
                       ("str", "int", "float", "bool", "null", "map", "seq", "merge"))


def read_yaml_mapping(path: Path, what: str) -> DictConfig:
    """The mapping in YAML file `path` (a `what`: "world config", "training config") as a DictConfig."""
    where = f"{what} {display_path(path)}"
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ConfigError(f"{where} is {size} bytes: expected a YAML config of at most {MAX_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{where} is not UTF-8 text: expected a YAML config") from None
    except OSError as exc:
        raise ConfigError(f"{where} is not readable ({exc.strerror or exc})") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if root is None:
            return OmegaConf.create()
        if not isinstance(root, yaml.MappingNode):
            raise ConfigError(f"{where} must be a mapping of keys to values, found "
                              f"{'a list' if isinstance(root, yaml.SequenceNode) else 'a single value'}")
        _count_values(root, where, {}, set())
        cfg = OmegaConf.create(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{_at(where, exc)}: not valid YAML ({_problem(exc)})") from None
    except (OmegaConfBaseException, ValueError) as exc:
        raise ConfigError(f"{where} is not a valid config ({str(exc).splitlines()[0]})") from None
    except RecursionError:
        raise ConfigError(f"{where}: its values are nested too deeply for a config") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{where} must be a mapping of keys to values")
    return cfg


def _count_values(node: yaml.Node, where: str, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """Values under `node` with every alias expanded (each node counted once per place it appears); refuses
    tags other than YAML's plain ones, self-referring aliases and expansions past MAX_VALUES."""
    if node.tag not in PLAIN_TAGS:
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        raise ConfigError(f"{where}:{node.start_mark.line + 1}: the tag {tag} is not allowed "
                          "(a config holds plain values, mappings and lists)")
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in open_nodes:
        raise ConfigError(f"{where}:{node.start_mark.line + 1}: an alias refers to the value that holds it")
    open_nodes.add(id(node))
    children: list[yaml.Node] = []
    if isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    elif isinstance(node, yaml.SequenceNode):
        children = node.value
    total = 1 + sum(_count_values(child, where, sizes, open_nodes) for child in children)
    open_nodes.discard(id(node))
    if total > MAX_VALUES:
        raise ConfigError(f"{where}:{node.start_mark.line + 1}: its aliases expand to more than {MAX_VALUES} values "
                          "(a YAML alias bomb?)")
    sizes[id(node)] = total
    return total


def _at(where: str, exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return f"{where}:{mark.line + 1}" if mark is not None else where


def _problem(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None)
    return " ".join(str(problem or exc).split())
