"""Pose dead reckoning from VPT actions: Minecraft speeds, headings, camera bins, keymap input."""

from __future__ import annotations

import math

import pytest
import torch

from engine.actions.keymap import Keymap
from engine.actions.vpt import ACTION_KEYS, camera_bin, camera_value
from engine.memory.integrator import MovementSpeeds, PoseIntegrator, wrap_degrees

SPEEDS = MovementSpeeds()


def action(*keys: str, pitch_degrees: float = 0.0, yaw_degrees: float = 0.0) -> torch.Tensor:
    """A VPT action vector with `keys` held and the camera turned by the given degrees (via its bins)."""
    row = torch.zeros(len(ACTION_KEYS))
    for key in keys:
        row[ACTION_KEYS.index(key)] = 1
    row[ACTION_KEYS.index("cameraX")] = float(camera_value(camera_bin(pitch_degrees)))
    row[ACTION_KEYS.index("cameraY")] = float(camera_value(camera_bin(yaw_degrees)))
    return row


def run(pose: tuple[float, ...], act: torch.Tensor, ticks: int) -> torch.Tensor:
    integrator = PoseIntegrator(pose)
    for _ in range(ticks):
        integrator.step(act)
    return integrator.state


@pytest.mark.parametrize(("keys", "speed"), [
    (("forward",), SPEEDS.walk), (("forward", "sprint"), SPEEDS.sprint), (("forward", "sneak"), SPEEDS.sneak),
    (("forward", "sneak", "sprint"), SPEEDS.sneak), (("back", "sprint"), SPEEDS.walk),
])
def test_one_second_covers_the_minecraft_speed(keys, speed):
    sign = -1 if "back" in keys else 1
    end = run((0.0, 64.0, 0.0, 0.0, 0.0), action(*keys), SPEEDS.ticks_per_second)
    assert torch.allclose(end, torch.tensor([0.0, 64.0, sign * speed, 0.0, 0.0], dtype=torch.float64), atol=1e-9)


def test_published_speeds():
    assert (SPEEDS.walk, SPEEDS.sprint, SPEEDS.sneak, SPEEDS.ticks_per_second) == (4.317, 5.612, 1.31, 20)


@pytest.mark.parametrize(("yaw", "keys", "direction"), [
    (0.0, ("forward",), (0, 1)),       # yaw 0 faces +z (south)
    (90.0, ("forward",), (-1, 0)),     # yaw 90 faces -x (west)
    (-90.0, ("forward",), (1, 0)),
    (180.0, ("forward",), (0, -1)),
    (0.0, ("right",), (-1, 0)),        # facing south, the right hand points west
    (0.0, ("left",), (1, 0)),
    (90.0, ("right",), (0, -1)),
])
def test_headings_follow_minecraft(yaw, keys, direction):
    end = run((10.0, 70.0, -5.0, 0.0, yaw), action(*keys), 1)
    step = SPEEDS.walk / SPEEDS.ticks_per_second
    assert end[0] == pytest.approx(10.0 + direction[0] * step, abs=1e-12)
    assert end[2] == pytest.approx(-5.0 + direction[1] * step, abs=1e-12)
    assert end[1] == 70.0


def test_diagonal_is_normalised_and_opposite_keys_cancel():
    end = run((0.0, 0.0, 0.0, 0.0, 0.0), action("forward", "right"), 20)
    assert math.hypot(float(end[0]), float(end[2])) == pytest.approx(SPEEDS.walk, abs=1e-9)
    assert float(end[0]) == pytest.approx(-float(end[2]), abs=1e-9)
    still = run((1.0, 2.0, 3.0, 0.0, 0.0), action("forward", "back", "left", "right"), 5)
    assert torch.equal(still, torch.tensor([1.0, 2.0, 3.0, 0.0, 0.0], dtype=torch.float64))


def test_camera_turns_first_and_pitch_is_clamped():
    # After turning right by 90°, forward walks west.
    integ = PoseIntegrator((0.0, 64.0, 0.0, 0.0, 0.0))
    for _ in range(9):
        integ.step(action(yaw_degrees=10.0))
    assert float(integ.state[4]) == pytest.approx(90.0)
    integ.step(action("forward"))
    assert float(integ.state[0]) == pytest.approx(-SPEEDS.walk / 20, abs=1e-12)
    assert float(integ.state[2]) == pytest.approx(0.0, abs=1e-12)
    # Mouse down (positive cameraX) looks down: Minecraft pitch grows, up to 90°.
    for _ in range(6):
        integ.step(action(pitch_degrees=20.0))
    assert float(integ.state[3]) == 90.0
    # Turn and walk in one tick: the step follows the new heading.
    integ = PoseIntegrator((0.0, 64.0, 0.0, 0.0, 0.0))
    integ.step(action("forward", yaw_degrees=-20.0))
    heading = math.radians(-20.0)
    assert float(integ.state[0]) == pytest.approx(-math.sin(heading) * SPEEDS.walk / 20, abs=1e-12)


def test_camera_bins_give_half_degrees_and_yaw_wraps():
    integ = PoseIntegrator((0.0, 0.0, 0.0, 0.0, 175.0))
    integ.step(action(yaw_degrees=7.3))  # 15 bins of 0.5°
    assert float(integ.state[4]) == pytest.approx(-177.5)
    assert torch.equal(wrap_degrees(torch.tensor([180.0, -180.0, 540.0])), torch.tensor([-180.0, -180.0, -180.0]))


def test_keymap_input_drives_the_pose():
    keymap = Keymap.load("minecraft")
    integ = PoseIntegrator((0.0, 64.0, 0.0, 0.0, 0.0))
    for _ in range(20):
        integ.step(keymap.to_action({"w", "left ctrl"}, set(), 0.0, 0.0))
    assert float(integ.state[2]) == pytest.approx(SPEEDS.sprint, abs=1e-9)
    # 40 pixels right at 0.15°/pixel = 6° of yaw.
    integ.step(keymap.to_action(set(), set(), 40.0, 0.0))
    assert float(integ.state[4]) == pytest.approx(6.0)
    assert integ.pose.dtype == torch.float32 and integ.pose.shape == (5,)


def test_reset_returns_to_the_spawn_pose():
    integ = PoseIntegrator((1.0, 2.0, 3.0, 4.0, 5.0))
    integ.step(action("forward", yaw_degrees=3.0))
    integ.reset()
    assert torch.equal(integ.pose, torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    with pytest.raises(ValueError, match="initial pose"):
        PoseIntegrator((1.0, 2.0))
