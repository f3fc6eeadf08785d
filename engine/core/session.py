"""The contract every world's session keeps, so the player, the headless runner, the recorder and the
benchmarks drive any family (Oasis, DIAMOND, WorldMAR) the same way.

A family module under `engine/worlds/` (see `families.py`) provides `NETWORKS` (checkpoint role ->
module class) and `open_world(cfg, networks, options) -> Session`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from omegaconf import DictConfig, OmegaConf

from engine.backends.base import Backend
from engine.backends.choose import make_backend
from engine.core.timing import StageTimer
from engine.errors import ConfigError


@dataclass(frozen=True)
class SessionOptions:
    """What the user chose at launch; a family reads the fields it understands.

    `extra` carries family-specific switches from the launcher (e.g. `agent` for Atari)."""

    sampler: str = "cached"
    steps: int | None = None
    seed: int = 0
    prompt: Path | None = None
    checkpoint_files: dict[str, Path] = field(default_factory=dict)
    allow_download: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def session_backend(cfg: DictConfig, options: SessionOptions, weight: torch.Tensor,
                    eager_for_auto: str = "") -> Backend:
    """The backend `--backend` chose (`options.extra["backend"]`) for a session whose networks live on the device
    and in the precision of `weight`; the log says which runs and, for auto, why. A non-empty `eager_for_auto`
    is why this world runs eagerly when auto chooses."""
    name = str(options.extra.get("backend", "eager"))
    if name == "auto" and eager_for_auto:
        backend = Backend(weight.device, weight.dtype, reason=f"auto: {eager_for_auto}")
    else:
        backend = make_backend(name, weight.device, weight.dtype, world=str(cfg.name),
                               checkpoint_files=options.checkpoint_files)
    if backend.name != "eager" or backend.reason:
        print(backend.describe())
    return backend


@dataclass(frozen=True)
class EpisodeSettings:
    """When a world with episodes restarts on its own (the world's `episode:` section), as DIAMOND's play loop
    does (eloialonso/diamond `src/game/game.py`: reset on `end or trunc`)."""

    horizon: int = 0  # ticks after a reset at which the episode is truncated and the world restarts; 0: never
    reset_on_end: bool = False  # restart when the world model predicts the end of the episode

    @classmethod
    def from_config(cls, cfg: DictConfig) -> EpisodeSettings:
        section = cfg.get("episode")
        given = {} if section is None else OmegaConf.to_container(section, resolve=True)
        unknown = sorted(set(given) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"world '{cfg.name}': episode.{unknown[0]} is unknown (expected horizon, reset_on_end)")
        settings = cls(horizon=int(given.get("horizon", 0)), reset_on_end=bool(given.get("reset_on_end", False)))
        if settings.horizon < 0:
            raise ConfigError(f"world '{cfg.name}': episode.horizon must be 0 (never) or a number of ticks, "
                              f"got {settings.horizon}")
        return settings

    def over(self, ticks: int, ended: bool) -> bool:
        """Whether an episode `ticks` ticks after its reset, whose end the world model predicted (`ended`), is over."""
        return (self.reset_on_end and ended) or 0 < self.horizon <= ticks

    def hud_items(self, ticks: int) -> list[str]:
        """The episode's progress towards its horizon, for the HUD (nothing without a horizon)."""
        return [f"episode tick {ticks}/{self.horizon}"] if self.horizon else []


class Session(Protocol):
    """One player in a world. Everything a tick touches lives on `device`."""

    cfg: DictConfig
    world: str
    device: torch.device
    dtype: torch.dtype
    action_dim: int
    frame_size: tuple[int, int]
    fps: int
    steps: int
    timer: StageTimer
    checkpoint_files: dict[str, Path]

    @property
    def pose(self) -> torch.Tensor | None:
        """(5,) x, y, z, pitch, yaw of the current frame, or None in worlds without a pose."""

    @property
    def frame_index(self) -> int:
        """Frames generated since the prompt, prompt frames included."""

    @property
    def last_action(self) -> torch.Tensor:
        """The (A,) action the last tick used: the input's, unless the world chose its own (agent mode)."""

    def reset(self) -> None:
        """Back to the spawn/prompt frames the session was opened with."""

    def prompt_frames(self) -> torch.Tensor:
        """(P, H, W, 3) uint8 frames shown before the first tick (the last one is on screen at reset)."""

    def step(self, action: torch.Tensor) -> torch.Tensor:
        """One tick: action (A,) float -> uint8 RGB frame (H, W, 3) on the device."""

    def hud_items(self) -> list[str]:
        """Extra world-specific HUD text (reward, lives, memory hits); cheap, called a few times a second."""

    def metadata(self) -> dict:
        """What a recording needs to say how its frames were made (world, family, seed, sampler, ...)."""

    # Optional: `tick_extras() -> dict[str, Tensor]`, per-frame arrays for recordings; `episode_over() -> bool`,
    # read after each tick (outside the tick, it may read device values): the player and the headless runner
    # then reset the world, as the reference's play loop does.
