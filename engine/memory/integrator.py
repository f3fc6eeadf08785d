"""Dead reckoning of the player's pose from the VPT action of each tick.

A pose is `(x, y, z, pitch, yaw)` in blocks and degrees with Minecraft's conventions (as the VPT
metadata `xpos, ypos, zpos, pitch, yaw` gives them): yaw 0 faces +z and grows when turning right
(towards −x), pitch grows when looking down and is clamped to ±90°.

Per tick, the camera turns first, then the player moves along the new heading:

* camera: column cameraX is the pitch change and cameraY the yaw change, `(bin − 40)/40` of 0.5°
  bins (engine/actions/vpt.py), i.e. `value · 20°`;
* movement: forward/back and left/right give a direction in the horizontal plane, normalised when
  diagonal (Minecraft scales the input vector to length 1), at the player's ground speed: walking
  4.317 blocks/s, sprinting 5.612 blocks/s (only while moving forward and not sneaking), sneaking
  1.31 blocks/s (Minecraft Wiki, "Walking", "Sprinting", "Sneaking"), at 20 ticks per second.
  Jumping, falling, collisions and momentum are ignored, so y never changes.

The state is kept in float64 on the device (float32 would round a sneaking step away at ~10⁵ blocks);
`step` is a handful of tensor ops with no host synchronisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from engine.actions.vpt import ACTION_KEYS, CAMERA_BIN_DEGREES, CAMERA_CENTER_BIN

TICKS_PER_SECOND = 20
CAMERA_DEGREES_PER_UNIT = CAMERA_BIN_DEGREES * CAMERA_CENTER_BIN  # a column value of 1.0 = 40 bins = 20°


@dataclass(frozen=True)
class MovementSpeeds:
    """Ground speeds in blocks per second."""

    walk: float = 4.317
    sprint: float = 5.612
    sneak: float = 1.31
    ticks_per_second: int = TICKS_PER_SECOND


@dataclass(frozen=True)
class ActionColumns:
    """Where the movement and camera entries sit in the world's action vector (VPT order by default)."""

    forward: int = ACTION_KEYS.index("forward")
    back: int = ACTION_KEYS.index("back")
    left: int = ACTION_KEYS.index("left")
    right: int = ACTION_KEYS.index("right")
    pitch: int = ACTION_KEYS.index("cameraX")
    yaw: int = ACTION_KEYS.index("cameraY")
    sneak: int = ACTION_KEYS.index("sneak")
    sprint: int = ACTION_KEYS.index("sprint")


def wrap_degrees(angle: torch.Tensor) -> torch.Tensor:
    """Angles onto [−180°, 180°)."""
    return torch.remainder(angle + 180, 360) - 180


class PoseIntegrator:
    """Integrates one pose from per-tick actions; `pose` is the pose of the newest frame."""

    def __init__(self, initial_pose: torch.Tensor | tuple[float, ...], device: torch.device | str = "cpu",
                 speeds: MovementSpeeds = MovementSpeeds(), columns: ActionColumns = ActionColumns(),
                 camera_degrees_per_unit: float = CAMERA_DEGREES_PER_UNIT) -> None:
        self.speeds, self.columns = speeds, columns
        self.camera_degrees_per_unit = camera_degrees_per_unit
        self.device = torch.device(device)
        self.initial = torch.as_tensor(initial_pose, dtype=torch.float64).to(self.device).clone()
        if self.initial.shape != (5,):
            raise ValueError(f"initial pose must be (x, y, z, pitch, yaw), got shape {tuple(self.initial.shape)}")
        self.state = self.initial.clone()

    def reset(self, pose: torch.Tensor | None = None) -> None:
        self.state = (self.initial if pose is None else pose.to(self.device, torch.float64)).clone()

    @property
    def pose(self) -> torch.Tensor:
        """(5,) float32 x, y, z, pitch, yaw."""
        return self.state.float()

    def step(self, action: torch.Tensor) -> torch.Tensor:
        """Advance one tick with the (A,) action; returns the new pose (5,) float32."""
        self.state = advance(self.state, action.to(self.device, torch.float64), self.speeds, self.columns,
                             self.camera_degrees_per_unit)
        return self.pose


def advance(pose: torch.Tensor, action: torch.Tensor, speeds: MovementSpeeds = MovementSpeeds(),
            columns: ActionColumns = ActionColumns(),
            camera_degrees_per_unit: float = CAMERA_DEGREES_PER_UNIT) -> torch.Tensor:
    """The pose after one tick of `action` (both on the same device and dtype); see the module docstring."""
    c = columns
    pitch = torch.clamp(pose[3] + action[c.pitch] * camera_degrees_per_unit, -90.0, 90.0)
    yaw = wrap_degrees(pose[4] + action[c.yaw] * camera_degrees_per_unit)
    forward = action[c.forward].clamp(0, 1) - action[c.back].clamp(0, 1)
    strafe = action[c.right].clamp(0, 1) - action[c.left].clamp(0, 1)
    length = torch.hypot(forward, strafe)
    scale = torch.where(length > 1, 1 / length.clamp(min=1), torch.ones_like(length))
    sneaking = action[c.sneak] > 0.5
    sprinting = (action[c.sprint] > 0.5) & (forward > 0) & ~sneaking
    speed = torch.where(sneaking, pose.new_tensor(speeds.sneak),
                        torch.where(sprinting, pose.new_tensor(speeds.sprint), pose.new_tensor(speeds.walk)))
    step = speed * scale / speeds.ticks_per_second
    rad = yaw * (math.pi / 180)
    sin, cos = torch.sin(rad), torch.cos(rad)
    # Facing (−sin yaw, 0, cos yaw); the right-hand side is (−cos yaw, 0, −sin yaw).
    dx = (-sin * forward - cos * strafe) * step
    dz = (cos * forward - sin * strafe) * step
    return torch.stack([pose[0] + dx, pose[1], pose[2] + dz, pitch, yaw])
