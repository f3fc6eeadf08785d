"""The sections every world yaml shares, and the base of each family's world schema (`Family.schemas`).

A family's schema derives from `WorldSchema`, giving its own `networks` (one section per checkpoint role, the
network's constructor arguments), `sampler` and whatever other sections its sessions read, and says what its
frames are (`image_size`) and which key `--steps` sets (`steps_key`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from omegaconf import MISSING

from engine.backends.device import physical_memory
from engine.core.schema import Invalid, gigabytes, integer, integers, one_of


@dataclass
class Checkpoints:
    """Where each network role's weights come from (engine.checkpoints.resolve)."""

    files: dict[str, str] = MISSING
    repo: str | None = None
    revision: str | None = None
    prefixes: dict[str, str | None] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    configs: dict[str, str] = field(default_factory=dict)
    sha256: dict[str, str | None] = field(default_factory=dict)


@dataclass
class Actions:
    keymap: str | None = None
    space: str | None = None


@dataclass
class Player:
    window_size: list[int] | None = integers(None, 1, 16384, length=2)
    filter: str = one_of("bilinear", "nearest", "bilinear", "sharp")


@dataclass
class Episode:
    """When a world with episodes restarts on its own (engine.core.session.EpisodeSettings)."""

    horizon: int = integer(0, 0, 10**9)
    reset_on_end: bool = False


@dataclass
class Prompt:
    """The spawn frame(s): a file next to the world yaml (or in checkpoints/<world>/), else downloaded from `url`."""

    frames: int = integer(1, 1, 4096)
    file: str | None = None
    url: str | None = None


@dataclass
class NoNetworks:
    """A world without networks (a real game)."""


@dataclass
class WorldSchema:
    """The keys of every world yaml; a family's schema overrides `networks` and `sampler` with its own sections."""

    family: str = MISSING
    checkpoints: Checkpoints = MISSING
    networks: Any = MISSING
    sampler: Any = MISSING
    name: str | None = None
    source_dir: str | None = None
    actions: Actions = field(default_factory=Actions)
    fps: int | None = integer(None, 1, 1000)
    player: Player = field(default_factory=Player)

    def steps_key(self) -> str | None:
        """The key `--steps N` sets (None: the world has no denoising steps)."""
        return None

    def image_size(self) -> tuple[int, int]:
        """(height, width) of the frames the world makes."""
        raise NotImplementedError

    def check(self) -> None:
        """Each network role has a file, and only the roles have files and key prefixes."""
        roles = [f.name for f in fields(self.networks)] if is_dataclass(self.networks) else []
        files = self.checkpoints.files
        for role in files:
            if role not in roles:
                raise Invalid(f"checkpoints.files.{role}", f"is unknown (the world's networks are "
                                                           f"{', '.join(roles) or 'none'})")
        missing = [role for role in roles if role not in files]
        if missing:
            raise Invalid("checkpoints.files", f"lacks a file for {', '.join(missing)}")
        for role in self.checkpoints.prefixes:
            if role not in roles:
                raise Invalid(f"checkpoints.prefixes.{role}", f"is unknown (the world's networks are "
                                                              f"{', '.join(roles) or 'none'})")


def check_fits_in_memory(key: str, value: int, nbytes: int, what: str) -> None:
    """Refuse `key: value` when the `nbytes` it makes the world hold (a memory bank, a cache) exceed the machine's
    memory; `what` says what the value must be, e.g. "a number of frames"."""
    if nbytes > physical_memory():
        raise Invalid.value(key, value, f"{what} that fits in memory ({gigabytes(nbytes)} > "
                                        f"{gigabytes(physical_memory())})")
