"""A DIAMOND session run eagerly beside the same session through another backend, ticked with the same input:
the backend's frames stay within 2 levels of the eager ones and Atari's sampled outcomes are equal."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from engine.actions.keymap import Keymap
from engine.backends.base import Backend
from engine.core.config import load_world_config
from engine.core.loader import load_networks
from engine.families.diamond.atari import AtariSession
from engine.families.diamond.csgo import CsgoSession

ATARI_ROLES = ("denoiser", "rew_end_model", "actor_critic")
FRAME_LEVELS = 2  # uint8 levels between two ways of computing the same frame


def atari_pair(world: Path, diamond_dir: Path, backend: Backend) -> list[AtariSession]:
    """Eager and `backend` sessions of a tiny Atari world in agent mode (every unit runs), on the fixture's spawn."""
    cfg = load_world_config(world)
    networks = load_networks(cfg, {role: Path(cfg.checkpoints.files[role]) for role in ATARI_ROLES},
                             torch.device("cpu"), torch.float32)
    io = load_file(diamond_dir / "atari_sampler_io.safetensors")
    frames, actions = io["prev_obs"][1], io["prev_act"][1]
    return [AtariSession(cfg, networks, frames, actions, seed=3, agent=True, backend=b) for b in (None, backend)]


def assert_atari_ticks_agree(sessions: list[AtariSession], ticks: int = 4) -> None:
    idle = torch.zeros(sessions[0].action_dim)
    for _ in range(ticks):
        eager, other = (session.step(idle).frame.int() for session in sessions)
        assert (eager - other).abs().max() <= FRAME_LEVELS
        outcomes = [(int(s.reward), int(s.end), int(s.last_action.argmax())) for s in sessions]
        assert outcomes[0] == outcomes[1]


def assert_csgo_ticks_agree(sessions: list[CsgoSession]) -> None:
    """Walking, strafing while turning, turning back."""
    keymap = Keymap.load("csgo")
    for keys, dx in (({"w"}, 0), ({"w", "d"}, 40), (set(), -12)):
        action = keymap.to_action(frozenset(keys), frozenset(), dx, 0)
        eager, other = (session.step(action).frame.int() for session in sessions)
        assert (eager - other).abs().max() <= FRAME_LEVELS
