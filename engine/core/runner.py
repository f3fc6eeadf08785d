"""One runner drives any session from any action source: the player's inference thread, the headless run
and the benchmarks all tick a world through it.

A tick is `session.step(action)` (everything on the device), then the single copy of the frame to the host
(pinned memory and the caller's CUDA stream on a GPU), then what needs the host: stage times, HUD text,
extras, the episode flag. The result is a `Tick`, which listeners (recorder, replay check, HUD) read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from engine.actions.space import check_action_values
from engine.core.session import Session, StepResult
from engine.errors import ConfigError

# Called at a tick's start: (action, time of the oldest input it carries), or None when out of actions.
ActionSource = Callable[[], tuple[torch.Tensor, float] | None]


@dataclass(frozen=True)
class Tick:
    """A finished frame on the host. `count` grows by one per published frame (prompt frames after a reset
    included); `action` is None for a prompt frame."""

    frame: np.ndarray
    action: torch.Tensor | None
    count: int
    frame_index: int
    input_time: float
    done_time: float
    stages_ms: dict[str, float] = field(default_factory=dict)
    pose: np.ndarray | None = None
    hud_items: tuple[str, ...] = ()
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    episode: int = 0
    episode_over: bool = False
    hud_images: tuple[np.ndarray, ...] = ()

    @property
    def is_prompt(self) -> bool:
        return self.action is None


def checked_action(action: torch.Tensor, session: Session) -> torch.Tensor:
    """`action` if it is an (action_dim,) vector of finite values within the action spaces' range: checked where
    actions enter (input, files, recordings), on the host, so that a tick never reads its device back."""
    if tuple(action.shape) != (session.action_dim,):
        raise ConfigError(f"world '{session.world}': an action has {session.action_dim} values, got shape "
                          f"{tuple(action.shape)}")
    return check_action_values(action, f"world '{session.world}'")


def _host(value: torch.Tensor | None) -> np.ndarray | None:
    return None if value is None else value.detach().float().cpu().numpy()


class Runner:
    """Ticks one session and hands back host-side `Tick`s; `reset` starts a new episode."""

    def __init__(self, session: Session, stream: torch.cuda.Stream | None = None) -> None:
        self.session = session
        self.stream = stream
        self.count = 0
        self.episode = 0
        cuda = session.device.type == "cuda"
        self._host_frame = torch.empty((*session.frame_size, 3), dtype=torch.uint8, pin_memory=cuda)

    def prompt(self, input_time: float | None = None) -> Tick:
        """The newest prompt frame as a tick: what the world shows before its first step."""
        frame = self.session.prompt_frames()[-1].cpu().numpy()
        return self._publish(frame, None, time.perf_counter() if input_time is None else input_time,
                             hud_items=tuple(self.session.hud_items()))

    def prompt_extras(self) -> dict[str, np.ndarray]:
        """The per-frame recording arrays of the prompt frames (the state right after a reset)."""
        return {name: value.detach().cpu().numpy() for name, value in self.session.tick_extras().items()}

    def reset(self) -> Tick:
        """Back to the spawn/prompt frames; the next tick belongs to a new episode."""
        start = time.perf_counter()
        self.session.reset()
        self.episode += 1
        return self.prompt(start)

    def step(self, action: torch.Tensor, input_time: float | None = None) -> Tick:
        """One tick of the world on `action`, copied to the host."""
        start = time.perf_counter() if input_time is None else input_time
        result = self.session.step(checked_action(action.detach().to("cpu", torch.float32), self.session))
        return self.finish(result, start)

    def finish(self, result: StepResult, input_time: float) -> Tick:
        """The host side of a step: one frame copy, then what the result defers until after it."""
        self._host_frame.copy_(result.frame, non_blocking=self.stream is not None)
        if self.stream is not None:
            self.stream.synchronize()
        action = result.action.detach().to("cpu", torch.float32)
        extras = {name: value.detach().cpu().numpy() for name, value in result.extras.items()}
        return self._publish(self._host_frame.numpy().copy(), action, input_time, stages_ms=result.stages_ms(),
                             pose=_host(result.pose), hud_items=result.hud_items(), extras=extras,
                             episode_over=result.episode_over(),
                             hud_images=tuple(image.detach().cpu().numpy() for image in result.hud_images()))

    def _publish(self, frame: np.ndarray, action: torch.Tensor | None, input_time: float, **fields) -> Tick:
        self.count += 1
        return Tick(frame=frame, action=action, count=self.count, frame_index=self.session.frame_index,
                    input_time=input_time, done_time=time.perf_counter(), episode=self.episode, **fields)
