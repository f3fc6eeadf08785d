"""One headless ViZDoom game: settings from a config mapping, seeded episodes, resized frames, exact poses.

Pose: the project's `(x, y, z, pitch, yaw)` has y up and the view direction `(sin yaw, cos yaw)` in the
(x, z) plane (the convention of `engine.memory.pose`). Doom's map is x east, y north, z up, and its ANGLE
is counter-clockwise from east, so the mapping is

    x = POSITION_X,  y = POSITION_Z (feet height; the eye is ~41 units above),  z = POSITION_Y,
    pitch = PITCH (positive = looking down, as the project wants: LOOK_DOWN raises it, measured),
    yaw = wrap(90 - ANGLE) into (-180, 180]  (turning right lowers ANGLE and raises yaw).

Units are Doom map units (the player is 56 tall, 32 wide) and degrees. Doom's horizontal field of view is
90 degrees; the default 320x256 render (5:4) keeps it and averages 4x4 pixel blocks into the 80x64 frame.

Traps avoided (see DESIGN.md, "Dependencies"): no shipped .cfg is loaded and the map is always set and
checked against the WAD's own lump directory, because `new_episode()` hangs forever without a map or with a
map the WAD lacks (measured). The level ignores input for its first 8 tics, so episodes start at tic 10.
"""

from __future__ import annotations

import math
import re
import shutil
import struct
import tempfile
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import numpy as np

from engine.actions import doom as actions
from engine.errors import ConfigError, EngineError

DEPTH_UNITS = 7.5
"""Map units per level of ViZDoom's uint8 depth buffer, measured on E1M1 recordings: the scale that reprojects
a frame best onto a later pose of the same place. The floor agrees: with square pixels (a focal length of 40
pixels at 80 wide, Doom's 90 degrees), the floor 41 units below the eye reads 7 levels in the bottom row."""
START_TIC = 10
"""Episodes start here: earlier tics ignore the player's input (measured), and the pistol is raised."""
SEED_LIMIT = 2**32
_MAP_LUMP = re.compile(r"E\dM\d|MAP\d\d")
_RESOLUTION = re.compile(r"RES_\d+X\d+")


def _vizdoom() -> ModuleType:
    try:
        import vizdoom
    except ImportError:
        raise EngineError("vizdoom is not installed for this platform (pip install vizdoom; wheels exist for "
                          "Linux x86_64/aarch64, macOS x86_64/arm64 and Windows x86_64)") from None
    return vizdoom


def _wad_maps(path: Path) -> tuple[bool, list[str]]:
    """(is an IWAD, the map names in lump order) from a WAD file's header and directory."""
    with open(path, "rb") as file:
        header = file.read(12)
        if len(header) < 12 or header[:4] not in (b"IWAD", b"PWAD"):
            raise ConfigError(f"wad {str(path)!r} is not a Doom WAD file (no IWAD or PWAD header)")
        count, offset = struct.unpack("<ii", header[4:])
        file.seek(offset)
        directory = file.read(16 * count)
    names = [directory[i + 8:i + 16].rstrip(b"\0").decode("ascii", "replace").upper()
             for i in range(0, len(directory), 16)]
    return header[:4] == b"IWAD", [name for name in names if _MAP_LUMP.fullmatch(name)]


def _resolve_wad(wad: str) -> Path:
    """A name ("freedoom1", "freedoom2", a scenario such as "my_way_home") inside vizdoom, or a file path."""
    vizdoom = _vizdoom()
    for candidate in (Path(vizdoom.__file__).parent / f"{wad}.wad", Path(vizdoom.scenarios_path) / f"{wad}.wad"):
        if candidate.is_file():
            return candidate
    path = Path(wad).expanduser()
    if path.is_file():
        return path
    scenarios = sorted(p.stem for p in Path(vizdoom.scenarios_path).glob("*.wad"))
    raise ConfigError(f"wad must be freedoom1, freedoom2, a vizdoom scenario ({', '.join(scenarios)}) "
                      f"or a WAD file, got {wad!r}")


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class DoomSettings:
    """What one game renders and how it steps; `map` None means the WAD's first map."""

    wad: str = "freedoom1"
    map: str | None = None
    frame_size: tuple[int, int] = (64, 80)
    render_resolution: str = "RES_320X256"
    frame_skip: int = actions.FRAME_SKIP
    monsters: bool = False
    render_weapon: bool = True
    render_hud: bool = False
    infinite_ammo: bool = True
    episode_timeout: int = 0
    depth: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.wad, str) or not self.wad:
            raise ConfigError(f"wad must be a WAD name or path, got {self.wad!r}")
        size = self.frame_size
        if (not isinstance(size, tuple | list) or len(size) != 2
                or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in size)):
            raise ConfigError(f"frame_size must be [height, width] with two integers >= 1, got {size!r}")
        object.__setattr__(self, "frame_size", tuple(size))
        if not isinstance(self.render_resolution, str) or not _RESOLUTION.fullmatch(self.render_resolution):
            raise ConfigError("render_resolution must be a vizdoom ScreenResolution name such as RES_320X256, "
                              f"got {self.render_resolution!r}")
        if not hasattr(_vizdoom().ScreenResolution, self.render_resolution):
            raise ConfigError(f"render_resolution {self.render_resolution!r} is not a vizdoom ScreenResolution")
        _check_int("frame_skip", self.frame_skip, 1)
        _check_int("episode_timeout", self.episode_timeout, 0)
        for name in ("monsters", "render_weapon", "render_hud", "infinite_ammo", "depth"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.map is not None and not isinstance(self.map, str):
            raise ConfigError(f"map must be a map name such as E1M1 or MAP01, got {self.map!r}")
        maps = self.maps
        chosen = (self.map or (maps[0] if maps else "")).upper()
        if chosen not in maps:
            raise ConfigError(f"map must be one of the WAD's maps ({', '.join(maps) or 'none'}), got {self.map!r}")
        object.__setattr__(self, "map", chosen)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "<settings>", section: str = "game"
                     ) -> DoomSettings:
        """Settings from a config mapping; errors name `source`, `section.key`, the value and what was expected."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: {section} must be a mapping of Doom settings, got {data!r}")
        known = {field.name for field in fields(cls)}
        for key in data:
            if key not in known:
                raise ConfigError(f"{source}: unknown key {section}.{key} (expected one of {', '.join(sorted(known))})")
        try:
            return cls(**data)
        except ConfigError as error:
            raise ConfigError(f"{source}: {section}.{error}") from None

    @cached_property
    def wad_files(self) -> tuple[Path, Path | None]:
        """(IWAD, PWAD or None): a PWAD (the scenarios) plays on top of freedoom2."""
        path = _resolve_wad(self.wad)
        if _wad_maps(path)[0]:
            return path, None
        return Path(_vizdoom().__file__).parent / "freedoom2.wad", path

    @cached_property
    def maps(self) -> list[str]:
        """The maps this WAD setup can start: the PWAD's first, then the IWAD's."""
        iwad, pwad = self.wad_files
        names = _wad_maps(pwad)[1] if pwad else []
        return names + [name for name in _wad_maps(iwad)[1] if name not in names]


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """A rendered buffer at the frame size: area averaging, as the 4x4 blocks of the default render."""
    if image.shape[:2] == (height, width):
        return image.copy()
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def _close_game(game: Any, config_dir: str) -> None:
    game.close()
    shutil.rmtree(config_dir, ignore_errors=True)


def doom_pose(x: float, y: float, z: float, angle: float, pitch: float) -> np.ndarray:
    """Doom's POSITION_X/Y/Z, ANGLE, PITCH -> the project's (x, y, z, pitch, yaw); see the module docstring."""
    yaw = (90.0 - angle) % 360.0
    if yaw > 180.0:
        yaw -= 360.0
    return np.array([x, z, y, pitch, yaw], dtype=np.float32)


def yaw_direction(yaw: float) -> np.ndarray:
    """Unit view direction (sin yaw, cos yaw) in the (x, z) plane of a project yaw in degrees."""
    return np.array([math.sin(math.radians(yaw)), math.cos(math.radians(yaw))])


class DoomGame:
    """A headless ViZDoom game stepped one tick (`frame_skip` tics) at a time; `game` is the vizdoom object."""

    def __init__(self, settings: DoomSettings | None = None) -> None:
        self.settings = settings or DoomSettings()
        vizdoom = _vizdoom()
        self._variables = [getattr(vizdoom.GameVariable, name)
                           for name in ("POSITION_X", "POSITION_Y", "POSITION_Z", "ANGLE", "PITCH")]
        self.game = vizdoom.DoomGame()
        # ZDoom's own settings file, else `_vizdoom.ini` in the working directory (ViZDoom docs of
        # `set_doom_config_path`), rewritten by every init: kept in a folder of this game's own instead
        config_dir = tempfile.mkdtemp(prefix="vizdoom-")
        self.game.set_doom_config_path(str(Path(config_dir) / "_vizdoom.ini"))
        # the game writes its settings file when it closes: close it before its folder goes, also at exit
        self._closer = weakref.finalize(self, _close_game, self.game, config_dir)
        self._configure(vizdoom)
        self.game.init()
        self._frame = np.zeros((*self.settings.frame_size, 3), dtype=np.uint8)
        self._depth = np.zeros(self.settings.frame_size, dtype=np.uint8)
        self._frame_stale = True
        self._episode = False

    def _configure(self, vizdoom: ModuleType) -> None:
        s, game = self.settings, self.game
        iwad, pwad = s.wad_files
        game.set_doom_game_path(str(iwad))
        if pwad is not None:
            game.set_doom_scenario_path(str(pwad))
        game.set_doom_map(s.map)
        game.set_mode(vizdoom.Mode.PLAYER)
        game.set_screen_resolution(getattr(vizdoom.ScreenResolution, s.render_resolution))
        game.set_screen_format(vizdoom.ScreenFormat.RGB24)
        game.set_window_visible(False)
        game.set_sound_enabled(False)
        game.set_audio_buffer_enabled(False)
        game.set_automap_buffer_enabled(False)
        game.set_depth_buffer_enabled(s.depth)
        game.set_labels_buffer_enabled(False)
        game.set_render_weapon(s.render_weapon)
        game.set_render_hud(s.render_hud)
        game.set_render_crosshair(False)
        game.set_render_messages(False)
        game.set_available_buttons([getattr(vizdoom.Button, name) for name in actions.GAME_BUTTONS])
        game.set_available_game_variables([])
        game.set_episode_start_time(START_TIC)
        game.set_episode_timeout(s.episode_timeout)
        # ZDoom command-line options (ViZDoom docs of add_game_args point to the ZDoom wiki).
        if not s.monsters:
            game.add_game_args("-nomonsters")
        if s.infinite_ammo:
            game.add_game_args("+sv_infiniteammo 1")

    def new_episode(self, seed: int, start_offset: int = 0) -> None:
        """Restart the level; the same seed and actions give the same frames and poses.

        Without monsters the seed changes only a few pixels (light flicker, bullet puffs) and never the start
        point, so `start_offset` > 0 first plays that many ticks of `ExplorePolicy(seed)`: a seeded walk to
        another start point and heading (not part of the episode the caller records).
        """
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed < SEED_LIMIT:
            raise ConfigError(f"a Doom seed must be an integer in [0, 2**32), got {seed!r}")
        _check_int("start_offset", start_offset, 0)
        # set_seed seeds the RNG that makes each episode's initial state (ViZDoom docs, `set_seed`).
        self.game.set_seed(int(seed))
        self.game.new_episode()
        self._frame_stale, self._episode = True, True
        if start_offset:
            from engine.families.vizdoom.explore import ExplorePolicy  # explore imports this module

            policy = ExplorePolicy(int(seed))
            for _ in range(start_offset):
                if self.is_episode_finished():
                    break
                self.step(policy.act(self.pose(), self.frame()))

    def step(self, action: np.ndarray) -> None:
        """Hold the action's buttons and spread its turn over the tick's tics."""
        if not self._episode:
            raise EngineError("call DoomGame.new_episode(seed) before step()")
        if self.game.is_episode_finished():
            raise EngineError("the Doom episode is over: call new_episode(seed) before stepping on")
        frame_skip = self.settings.frame_skip
        self.game.make_action(actions.to_game_buttons(action, frame_skip), frame_skip)
        self._frame_stale = True

    def frame(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB at `frame_size` (area averaging); once the episode is over ViZDoom has no
        state, and this stays the last frame it had."""
        self._read_state()
        return self._frame

    def depth(self) -> np.ndarray:
        """(H, W) uint8 depth buffer at `frame_size` (area averaging), with `depth: true` only.

        ViZDoom's depth buffer holds the planar depth (distance along the view direction: measured, the
        floor reads the same across a row), about DEPTH_UNITS map units per level (measured on E1M1).
        """
        if not self.settings.depth:
            raise EngineError("this Doom game renders no depth buffer: set depth: true in its game settings")
        self._read_state()
        return self._depth

    def _read_state(self) -> None:
        if not self._episode:
            raise EngineError("no Doom frame yet: call new_episode(seed) first")
        state = self.game.get_state() if self._frame_stale else None
        if state is None:
            return
        height, width = self.settings.frame_size
        self._frame = _resize(state.screen_buffer, height, width)
        if self.settings.depth:
            self._depth = _resize(state.depth_buffer, height, width)
        self._frame_stale = False

    def pose(self) -> np.ndarray:
        """(5,) float32 (x, y, z, pitch, yaw) in the project's convention (see the module docstring)."""
        x, y, z, angle, pitch = (self.game.get_game_variable(v) for v in self._variables)
        return doom_pose(x, y, z, angle, pitch)

    def is_episode_finished(self) -> bool:
        """True after the timeout, the level's exit or the player's death."""
        return self.game.is_episode_finished()

    def close(self) -> None:
        self._closer()

    def __enter__(self) -> DoomGame:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
