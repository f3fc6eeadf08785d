"""The contract every world's session keeps, so the player, the headless runner, the recorder and the
benchmarks drive any family the same way (through `engine.core.runner.Runner`).

A world module of a family (`engine/families/<family>/`, named by the registry in `engine.families`)
provides `NETWORKS` (checkpoint role -> module class) and `open_world(cfg, networks, options) -> Session`.
`step` returns one `StepResult`: the frame and everything the runner, HUD and recorder need of that tick,
so nothing is probed on the session afterwards. `SessionBase` holds what every session has in common.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from omegaconf import DictConfig, OmegaConf

from engine.backends.base import Backend
from engine.backends.choose import make_backend
from engine.backends.device import dtype_name
from engine.core.module import Placed
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
    prompt_offset: int = 0  # the prompt video's or recording's first frame (headless: --action-offset)
    checkpoint_files: dict[str, Path] = field(default_factory=dict)
    allow_download: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def session_backend(cfg: DictConfig, options: SessionOptions, network: Placed, eager_for_auto: str = "") -> Backend:
    """The backend `--backend` chose (`options.extra["backend"]`) for a session whose networks live on the device
    and in the precision of `network`; the log says which runs and, for auto, why. A non-empty `eager_for_auto`
    is why this world runs eagerly when auto chooses."""
    name = str(options.extra.get("backend", "eager"))
    if name == "auto" and eager_for_auto:
        backend = Backend(network.device, network.dtype, reason=f"auto: {eager_for_auto}")
    else:
        backend = make_backend(name, network.device, network.dtype, world=str(cfg.name),
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


@dataclass
class StepResult:
    """What one tick produced. Tensors stay on the device; what needs the host (stage times, HUD text, whether
    the episode ended) is read through this result after the runner's single copy of the frame, so a tick
    itself never synchronises.

    `action` is the action the tick used: the input's, unless the world chose its own (agent mode). `extras`
    are per-frame arrays for recordings (e.g. WorldMAR's retrieved memory frames). `episode_over()` says the
    world's episode ended with this tick; the runner then resets the world, as the reference play loops do."""

    frame: torch.Tensor
    action: torch.Tensor
    pose: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    timer: StageTimer | None = None
    hud: Callable[[], Sequence[str]] = tuple
    over: Callable[[], bool] = bool
    images: Callable[[], Sequence[torch.Tensor]] = tuple

    def stages_ms(self) -> dict[str, float]:
        """Stage durations of this tick in ms (on CUDA this waits for the tick's events)."""
        return {} if self.timer is None else self.timer.milliseconds()

    def hud_items(self) -> tuple[str, ...]:
        return tuple(self.hud())

    def episode_over(self) -> bool:
        return bool(self.over())

    def hud_images(self) -> tuple[torch.Tensor, ...]:
        return tuple(self.images())


class Session(Protocol):
    """One player in a world. Everything a tick touches lives on `device`."""

    cfg: DictConfig
    world: str
    family: str
    episodic: bool  # the world restarts on its own (StepResult.episode_over); recordings number the episodes
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

    def reset(self) -> None:
        """Back to the spawn/prompt frames the session was opened with."""

    def prompt_frames(self) -> torch.Tensor:
        """(P, H, W, 3) uint8 frames shown before the first tick (the last one is on screen at reset)."""

    def step(self, action: torch.Tensor) -> StepResult:
        """One tick: action (A,) float -> the next frame (uint8 RGB (H, W, 3) on the device) and its context."""

    def hud_items(self) -> list[str]:
        """World-specific HUD text (reward, lives, memory hits) of the current state."""

    def tick_extras(self) -> dict[str, torch.Tensor]:
        """Per-frame arrays of the current frame for recordings (after a reset: the prompt frames')."""

    def metadata(self) -> dict:
        """What a recording needs to say how its frames were made (world, family, seed, sampler, ...)."""


class SessionBase:
    """The fields and methods every session shares. A subclass sets `family`, calls `__init__` with what it
    knows of its networks, and implements `reset`, `prompt_frames`, `frame_index` and `step` (ending with
    `return self.result(frame, ...)`); `settings_metadata` adds its sampler settings to `metadata`."""

    family: ClassVar[str]
    episodic: ClassVar[bool] = False
    context_window: int = 1  # frames a tick conditions on (engine.eval's revisits lie beyond it)

    def __init__(self, cfg: DictConfig, *, device: torch.device, dtype: torch.dtype, action_dim: int,
                 frame_size: tuple[int, int], steps: int, seed: int = 0, sampler: str = "",
                 checkpoint_files: dict[str, Path] | None = None, backend: Backend | None = None,
                 default_fps: int = 20) -> None:
        self.cfg = cfg
        self.world = str(cfg.name)
        self.device, self.dtype = device, dtype
        self.action_dim = int(action_dim)
        self.frame_size = (int(frame_size[0]), int(frame_size[1]))
        self.fps = int(cfg.get("fps", default_fps))
        self.steps = int(steps)
        self.seed = seed
        self.sampler_kind = sampler
        self.checkpoint_files = checkpoint_files or {}
        self.backend = backend or Backend(device, dtype)
        self.timer = StageTimer(device)
        self.last_action = torch.zeros(self.action_dim)

    @property
    def pose(self) -> torch.Tensor | None:
        return None

    def warm_up(self) -> None:
        """Compile/capture the backend's calls now, under a progress bar, before the first tick."""
        self.backend.warm_up()

    def hud_items(self) -> list[str]:
        return []

    def settings_metadata(self) -> dict:
        return {}

    def metadata(self) -> dict:
        """What a recording needs to say how its frames were made."""
        return {"world": self.world, "family": self.family, "seed": self.seed, "sampler": self.sampler_kind,
                "steps": self.steps, **self.settings_metadata(), "device": str(self.device),
                "dtype": dtype_name(self.dtype), "backend": self.backend.label}

    def tick_extras(self) -> dict[str, torch.Tensor]:
        """Per-frame arrays of the tick that just ran, for recordings."""
        return {}

    def episode_over(self) -> bool:
        """Whether the tick that just ran ended the episode (read after the frame copy: it may read the device)."""
        return False

    def hud_images(self) -> list[torch.Tensor]:
        """Small uint8 (H, W, 3) images for the HUD (e.g. recalled memory frames); read after the frame copy."""
        return []

    def start_from(self, frames: torch.Tensor, actions: torch.Tensor, poses: torch.Tensor) -> None:
        """Continue after real frames (P, H, W, 3) uint8, oldest first, with the actions (P, A) that led into them
        and their poses (P, 5), as if the world had made them: how engine.eval gives a world real context."""
        raise ConfigError(f"world '{self.world}' ({self.family}) cannot continue from recorded frames")

    def force(self, frame: torch.Tensor, pose: torch.Tensor) -> None:
        """Replace the frame the last tick made, and its pose, by the real ones (teacher forcing)."""
        raise ConfigError(f"world '{self.world}' ({self.family}) cannot be teacher-forced")

    def result(self, frame: torch.Tensor) -> StepResult:
        """The StepResult of the tick that just made `frame`, from the session's state after it."""
        return StepResult(frame=frame, action=self.last_action, pose=self.pose, extras=self.tick_extras(),
                          timer=self.timer, hud=self.hud_items, over=self.episode_over, images=self.hud_images)
