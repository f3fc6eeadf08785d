"""The real game as a world (`--world doom-game`): ViZDoom behind the session contract, so the player, the
recorder, the headless runner, the collectors and the benchmarks drive Freedoom exactly as they drive a dream.

A tick holds the action's buttons for `game.frame_skip` tics and returns the frame at `game.frame_size` with
the engine's exact pose. `reset` restarts the episode from the same seed and start point, so a reset world
replays its frames for the same actions. The game has no networks: `NETWORKS` is empty and nothing is loaded.
"""

from __future__ import annotations

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from engine.actions import doom as actions
from engine.core.session import EpisodeSettings, SessionBase, SessionOptions, StepResult
from engine.errors import ConfigError
from engine.families.vizdoom.game import DEPTH_UNITS, DoomGame, DoomSettings

NETWORKS: dict = {}
DOOM_TICS_PER_SECOND = 35


def game_settings(cfg: DictConfig) -> DoomSettings:
    """The world yaml's `game:` section as DoomSettings (errors name the world file and the key)."""
    section = OmegaConf.to_container(cfg.get("game") or OmegaConf.create({}), resolve=True)
    return DoomSettings.from_mapping(section, source=f"world '{cfg.name}'")


def start_offset(cfg: DictConfig) -> int:
    """Ticks of seeded exploration before the episode starts (`start_offset`, e.g. `--set start_offset=300`)."""
    value = cfg.get("start_offset", 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"world '{cfg.name}': start_offset must be a number of ticks >= 0, got {value!r}")
    return value


class DoomGameSession(SessionBase):
    """One player in the real Doom; `reset` restarts the episode (same seed, same start point)."""

    family = "doom-game"
    episodic = True

    def __init__(self, cfg: DictConfig, settings: DoomSettings, *, seed: int = 0, offset: int = 0) -> None:
        super().__init__(cfg, device=torch.device("cpu"), dtype=torch.float32, action_dim=actions.NUM_ACTIONS,
                         frame_size=settings.frame_size, steps=0, seed=seed, sampler="game",
                         default_fps=round(DOOM_TICS_PER_SECOND / settings.frame_skip))
        self.settings = settings
        self.offset = offset
        self.episode = EpisodeSettings.from_config(cfg)
        self.game = DoomGame(settings)
        self.reset()

    def reset(self) -> None:
        self.game.new_episode(self.seed, self.offset)
        self.episode_ticks = 0
        self.last_action = torch.zeros(self.action_dim)
        self._pose = torch.from_numpy(self.game.pose().copy())

    @property
    def pose(self) -> torch.Tensor:
        return self._pose

    @property
    def frame_index(self) -> int:
        return self.episode_ticks + 1

    def prompt_frames(self) -> torch.Tensor:
        return torch.from_numpy(self.game.frame().copy())[None]

    def step(self, action: torch.Tensor) -> StepResult:
        """One tick of the real game: buttons held for `frame_skip` tics, then the frame and the exact pose."""
        values = actions.validate(action.detach().cpu().numpy())
        self.last_action = torch.from_numpy(values.copy())
        with self.timer.stage("game"):
            if not self.game.is_episode_finished():
                self.game.step(values)
            frame = torch.from_numpy(self.game.frame().copy())
            self._pose = torch.from_numpy(self.game.pose().copy())
        self.episode_ticks += 1
        return self.result(frame)

    def episode_over(self) -> bool:
        return self.game.is_episode_finished() or self.episode.over(self.episode_ticks, ended=False)

    def hud_items(self) -> list[str]:
        return [f"{self.settings.wad} {self.settings.map}", f"tick {self.episode_ticks}",
                *self.episode.hud_items(self.episode_ticks)]

    def tick_extras(self) -> dict[str, torch.Tensor]:
        """`depth`: the game's (H, W) uint8 depth buffer, with `game.depth: true`."""
        return {"depth": torch.from_numpy(self.game.depth().copy())} if self.settings.depth else {}

    def settings_metadata(self) -> dict:
        s = self.settings
        depth = {"depth_units": DEPTH_UNITS} if s.depth else {}
        return {"wad": s.wad, "map": s.map, "frame_skip": s.frame_skip, "render_resolution": s.render_resolution,
                "monsters": s.monsters, "start_offset": self.offset, "episode": self.episode.__dict__, **depth}

    def close(self) -> None:
        self.game.close()


def open_world(cfg: DictConfig, networks: dict, options: SessionOptions) -> DoomGameSession:
    if options.prompt is not None:
        raise ConfigError(f"world '{cfg.name}' is the real game: it starts from its map, not from --prompt")
    return DoomGameSession(cfg, game_settings(cfg), seed=options.seed, offset=start_offset(cfg))


def spawn_frame(cfg: DictConfig, seed: int = 0, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The real game's first frame and pose at a start point, e.g. to start a dream of this map from."""
    game = DoomGame(game_settings(cfg))
    try:
        game.new_episode(seed, offset)
        return game.frame().copy(), game.pose().copy()
    finally:
        game.close()
