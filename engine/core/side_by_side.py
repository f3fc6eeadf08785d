"""Two worlds fed the same inputs, shown as one: the ground truth on the left, the dream on the right
(`python launcher.py --side-by-side`, e.g. the real Doom beside the Doom world model).

The pair is a session itself, so the player, the recorder and the headless runner drive it unchanged: each
tick steps both with the same action and joins their frames; a recording holds the joined frames, the dream's
pose and extras, and the ground truth's pose as `truth_pose`.
"""

from __future__ import annotations

import torch

from engine.core.session import Session, StepResult
from engine.errors import ConfigError

GAP = 4  # black columns between the two frames


class SideBySide:
    """`truth` | `dream`, both ticked with every action."""

    episodic = False

    def __init__(self, truth: Session, dream: Session) -> None:
        if truth.action_dim != dream.action_dim:
            raise ConfigError(f"--side-by-side: '{truth.world}' takes {truth.action_dim} actions, '{dream.world}' "
                              f"{dream.action_dim}: the two worlds need the same action space")
        if truth.frame_size[0] != dream.frame_size[0]:
            raise ConfigError(f"--side-by-side: '{truth.world}' frames are {truth.frame_size[0]} high, "
                              f"'{dream.world}' frames {dream.frame_size[0]}")
        self.truth, self.dream = truth, dream
        self.cfg, self.world, self.family = dream.cfg, f"{dream.world}-vs-{truth.world}", dream.family
        self.device, self.dtype = dream.device, dream.dtype
        self.action_dim, self.fps, self.steps = dream.action_dim, dream.fps, dream.steps
        self.frame_size = (dream.frame_size[0], truth.frame_size[1] + GAP + dream.frame_size[1])
        self.timer = dream.timer
        self.checkpoint_files = dream.checkpoint_files
        self.context_window = dream.context_window
        self.last_action = dream.last_action

    @property
    def pose(self) -> torch.Tensor | None:
        return self.dream.pose

    @property
    def frame_index(self) -> int:
        return self.dream.frame_index

    def join(self, truth: torch.Tensor, dream: torch.Tensor) -> torch.Tensor:
        gap = torch.zeros((truth.shape[0], GAP, 3), dtype=torch.uint8)
        return torch.cat([truth.cpu(), gap, dream.cpu()], dim=1)

    def reset(self) -> None:
        self.truth.reset()
        self.dream.reset()

    def prompt_frames(self) -> torch.Tensor:
        return self.join(self.truth.prompt_frames()[-1], self.dream.prompt_frames()[-1])[None]

    def step(self, action: torch.Tensor) -> StepResult:
        truth = self.truth.step(action)
        dream = self.dream.step(action)
        self.last_action = dream.action
        truth_frame = truth.frame
        extras = {**dream.extras, "truth_pose": truth.pose if truth.pose is not None else torch.full((5,), torch.nan)}
        return StepResult(frame=self.join(truth_frame, dream.frame), action=dream.action, pose=dream.pose,
                          extras=extras, timer=dream.timer, hud=self.hud_items,
                          over=lambda: truth.episode_over() or dream.episode_over(), images=dream.images)

    def hud_items(self) -> list[str]:
        return [f"left: {self.truth.world} · right: {self.dream.world}", *self.dream.hud_items()]

    def hud_images(self) -> list[torch.Tensor]:
        return self.dream.hud_images()

    def tick_extras(self) -> dict[str, torch.Tensor]:
        pose = self.truth.pose
        return {**self.dream.tick_extras(), "truth_pose": pose if pose is not None else torch.full((5,), torch.nan)}

    def metadata(self) -> dict:
        return {**self.dream.metadata(), "world": self.world, "side_by_side": {"truth": self.truth.metadata(),
                                                                                "dream": self.dream.metadata()}}
