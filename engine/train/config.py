"""Training configs: `engine/train/configs/<name>.yaml` or a path, OmegaConf, dotlist overrides on top.

Defaults below fill in what a config leaves out; paths inside a config are relative to the working
directory (run from the project root).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from engine.errors import ConfigError
from engine.families import recipe_kinds

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"
REQUIRED_KEYS = ("family", "model", "data")

DEFAULTS = {
    "seed": 0,
    "output_dir": "runs/${name}",
    "init": {},
    "optim": {"lr": 1e-4, "betas": [0.9, 0.99], "eps": 1e-8, "weight_decay": 0.01, "warmup_steps": 100,
              "min_lr_ratio": 0.1, "grad_clip": 1.0},
    "train": {"steps": 1000, "batch_size": 8, "device": "auto", "precision": "bf16", "ema_decay": 0.999,
              "checkpoint_every": 500, "keep_last": 2, "cpu_autocast": False, "num_workers": 0, "resume": True, "progress": True},
    "distributed": {"strategy": "ddp"},
    "world": {},
}


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
    try:
        loaded = OmegaConf.load(path)
        for entry in overrides:
            if "=" not in entry or not entry.partition("=")[0].strip():
                raise ConfigError(f"override '{entry}' for {path}: expected KEY=VALUE (e.g. train.steps=100)")
        cfg = OmegaConf.merge(OmegaConf.create(DEFAULTS), {"name": path.stem}, loaded,
                              OmegaConf.from_dotlist(list(overrides)))
        OmegaConf.resolve(cfg)
    except (OmegaConfBaseException, ValueError, OSError) as exc:
        raise ConfigError(f"training config {path}: {str(exc).splitlines()[0]}") from None
    for key in REQUIRED_KEYS:
        if OmegaConf.select(cfg, key) is None:
            raise ConfigError(f"training config {path} lacks the required key '{key}'")
    if cfg.family not in recipe_kinds():
        raise ConfigError(f"training config {path}: family '{cfg.family}' is not one of {', '.join(recipe_kinds())}")
    return cfg
