"""The schema of the real game's world yaml (assets/worlds/doom-game.yaml, world kind doom-game).

`game:` holds `DoomSettings`' fields with their defaults; what needs the game itself (the WAD exists, the map is
one of its maps, the resolution is one of ViZDoom's) is checked by `DoomSettings` when the world opens.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from engine.core.schema import integer, integers
from engine.core.world_schema import Episode, NoNetworks, WorldSchema


@dataclass
class Game:
    """`engine.families.vizdoom.game.DoomSettings`."""

    wad: str = "freedoom1"
    map: str | None = None
    frame_size: list[int] = integers([64, 80], 1, 4096, length=2)
    render_resolution: str = "RES_320X256"
    frame_skip: int = integer(2, 1, 1000)
    monsters: bool = False
    render_weapon: bool = True
    render_hud: bool = False
    infinite_ammo: bool = True
    episode_timeout: int = integer(0, 0, 10**9)
    depth: bool = False


@dataclass
class NoSampler:
    """The game has no sampler (`sampler: {}`)."""


@dataclass
class DoomGameWorld(WorldSchema):
    networks: NoNetworks = MISSING
    sampler: NoSampler = MISSING
    game: Game = field(default_factory=Game)
    start_offset: int = integer(0, 0, 10**7)
    episode: Episode = field(default_factory=Episode)

    def image_size(self) -> tuple[int, int]:
        return self.game.frame_size[0], self.game.frame_size[1]
