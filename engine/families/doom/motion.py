"""The dreamer's pose: Doom's player movement integrated from the actions alone.

Per game tic Doom adds the held moves' thrust to the player's momentum, moves by it and keeps 0.90625 of it
(friction); the turn applies before the thrust. Thrust per tic: 0.78125 map units along the view for
forward/backward, 0.75 across it for strafing (measured on vizdoom 1.3.2, engine/families/vizdoom/explore.py
uses the same constants). This is exact in the open. The dream has no map, so against a wall the integrated pose
would keep going where the real player stops. So the motion keeps the walls the last WALL_FRAMES frames showed
(`see`: each column's nearest depth at the horizon, put into the map at the frame's pose, as the world model's
depth network predicts it; a newer real view that sees beyond an older wall point drops it, so an opened door or a
wrong depth does not block for long; a dreamed view only adds walls) and moves as Doom does against them: the
player is an axis-aligned box; a tic's move that would take a wall point into it (or deeper) is tried along x
alone, then along z alone (sliding along the mostly axis-aligned walls of the map), else not made, and the momentum
keeps only the part that moved.
Measured in the dream itself on the validation revisits (started on the real frames, driven by the true actions),
the pose is 8.6 / 15.4 / 27.0 map units from the real one on average after 8 / 16 / 24 ticks (medians 4.0 / 9.1 /
18.9); when the dreamed views carved too (and the box was 12 units), 10.4 / 20.3 / 33.4: the depth the network
predicts from a blurred dreamed frame often sees through a real wall, and the dream then walked through it.
"""

from __future__ import annotations

import torch

from engine.actions import doom as actions
from engine.families.doom.reproject import view_axes

FRICTION = 0.90625
FORWARD_THRUST = 0.78125
STRAFE_THRUST = 0.75
WALL_RADIUS = 11.0  # map units: half the box's side (Doom's player box is 32 wide; best of 10, 11, 12 on doom-val)
WALL_FRAMES = 16  # frames whose walls the motion keeps (best of 4, 8, 16, 32 on doom-val)
SLIDE_TOLERANCE = 4.0  # map units: about half a level of the recordings' depth (7.5 map units)
HORIZON_ROWS = 4  # rows around the horizon whose nearest depth is a column's wall
EDGE = 0.02  # |second difference of 1/depth| over 1/depth above which a column is a depth edge, not a wall
CARVE_RATIO, CARVE_UNITS = 0.1, 8.0  # a wall point a view sees this far beyond is gone
FAR = 1.0e9  # where a column without depth puts its wall point


def horizon_depth(depth: torch.Tensor) -> torch.Tensor:
    """(W,) the nearest depth of each column of a view (H, W) of planar depth (map units) in the rows at the
    horizon (eye height: above the steps a player climbs, below the lintels it walks under). FAR where a column has
    no depth there (0: the weapon) or sits on a depth edge (1/depth of a wall is affine in the column, a smeared
    edge between a near and a far wall is not)."""
    height = depth.shape[-2]
    band = depth[height // 2 - HORIZON_ROWS // 2:height // 2 + HORIZON_ROWS // 2].float()
    nearest = torch.where(band > 0, band, torch.full_like(band, FAR)).amin(0)
    inverse = 1 / nearest
    bend = (inverse[2:] - 2 * inverse[1:-1] + inverse[:-2]).abs() / inverse[1:-1]
    edge = torch.nn.functional.pad(bend > EDGE, (1, 1), value=False)
    return torch.where(edge, torch.full_like(nearest, FAR), nearest)


def wall_points(nearest: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
    """(W, 2) map (x, z) of the columns' nearest walls `nearest` (W,) seen from `pose` (5,), through Doom's
    90-degree field of view (`reproject`'s camera); FAR for the columns without one."""
    focal = len(nearest) / 2
    lateral = (torch.arange(len(nearest), device=nearest.device) + 0.5 - focal) / focal * nearest
    forward, right = view_axes(pose[4].float())
    points = pose[[0, 2]].float() + nearest[:, None] * forward + lateral[:, None] * right
    return torch.where((nearest < FAR)[:, None], points, torch.full_like(points, FAR))


def seen_through(points: torch.Tensor, nearest: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
    """(P,) which wall points (P, 2) a view from `pose` with columns' nearest walls `nearest` (W,) sees well
    beyond: gone since (a door opened) or never there (a wrong depth)."""
    focal = len(nearest) / 2
    forward, right = view_axes(pose[4].float())
    offset = points - pose[[0, 2]].float()
    ahead, across = offset @ forward, offset @ right
    column = (across / ahead.clamp(min=1e-3) * focal + focal).floor().long()
    inside = (ahead > 0) & (column >= 0) & (column < len(nearest))
    wall = nearest[column.clamp(0, len(nearest) - 1)]
    return inside & (wall < FAR) & (wall > ahead * (1 + CARVE_RATIO) + CARVE_UNITS)


class DoomMotion:
    """(x, y, z, pitch, yaw), the momentum and the walls seen lately, advanced one tick (`frame_skip` tics) per
    action, on the device and without a host sync."""

    def __init__(self, spawn_pose: torch.Tensor, frame_skip: int, device: torch.device) -> None:
        self.spawn = spawn_pose.to(device, torch.float32).clone()
        self.frame_skip = int(frame_skip)
        self.pose = self.spawn.clone()
        self.momentum = torch.zeros(2, device=device)
        self.walls: torch.Tensor | None = None  # (WALL_FRAMES * W, 2), oldest frame's first
        # the box of each move tried (all of it, along x, along z): sliding along a wall, the box is narrower
        # across it by SLIDE_TOLERANCE, so that the wall's points, as uneven as the depth, let it slide
        self._boxes = torch.tensor([[WALL_RADIUS, WALL_RADIUS], [WALL_RADIUS, WALL_RADIUS - SLIDE_TOLERANCE],
                                    [WALL_RADIUS - SLIDE_TOLERANCE, WALL_RADIUS]], device=device)[:, None]

    def reset(self, pose: torch.Tensor | None = None) -> None:
        """Back to the spawn or to `pose`, standing still; the walls seen stay (`forget_walls` drops them)."""
        self.pose = (self.spawn if pose is None else pose.to(self.spawn)).clone()
        self.momentum.zero_()

    def forget_walls(self) -> None:
        self.walls = None

    def see(self, depth: torch.Tensor, replace_newest: bool = False, carve: bool = True) -> None:
        """Keep the walls of a view (H, W) of planar depth seen from the current pose and, with `carve` (a real
        view, not a dreamed one), drop the older ones it sees beyond; `replace_newest`: instead of the newest
        view's (a frame replaced by the real one)."""
        nearest = horizon_depth(depth)
        points = wall_points(nearest, self.pose)
        if self.walls is None:
            self.walls = torch.full((WALL_FRAMES * len(points), 2), FAR, device=points.device)
        kept = self.walls[:-len(points)] if replace_newest else self.walls[len(points):]
        if carve:
            kept = torch.where(seen_through(kept, nearest, self.pose)[:, None], torch.full_like(kept, FAR), kept)
        self.walls = torch.cat([kept, points])

    def step(self, action: torch.Tensor) -> torch.Tensor:
        """The pose after `action` (7,), as a new tensor."""
        action = action.to(self.pose)
        yaw = torch.remainder(self.pose[4] + action[actions.TURN].clamp(-1, 1) * actions.MAX_TURN_DEGREES + 180,
                              360) - 180
        forward, right = view_axes(yaw)
        held = (action[:4] > 0.5).to(self.pose)
        thrust = FORWARD_THRUST * forward * (held[0] - held[1]) + STRAFE_THRUST * right * (held[3] - held[2])
        position = self.pose[[0, 2]].clone()
        for _ in range(self.frame_skip):
            self.momentum = self.momentum + thrust
            moved = self._move(position, self.momentum)
            position = position + moved
            self.momentum = moved * FRICTION
        pose = self.pose.clone()
        pose[0], pose[2], pose[4] = position[0], position[1], yaw
        self.pose = pose
        return pose

    def _move(self, position: torch.Tensor, momentum: torch.Tensor) -> torch.Tensor:
        """The part of a tic's move `momentum` (2,) from `position` that no wall blocks: all of it, else along x
        alone, else along z alone, else none. A wall point blocks a move that takes it into the player's box,
        or deeper into it (one already in, from an error of the pose or the depth, only stops the moves toward it)."""
        if self.walls is None:
            return momentum
        zero = torch.zeros_like(momentum[0])
        along_x, along_z = torch.stack([momentum[0], zero]), torch.stack([zero, momentum[1]])
        moves = torch.stack([momentum, along_x, along_z])  # (3, 2), preferred first
        before = ((self.walls - position).abs() / self._boxes).amax(-1)  # (3, P): 1 on the box's edge
        after = ((self.walls - (position + moves[:, None])).abs() / self._boxes).amax(-1)
        blocked = ((after < 1) & (after < before)).any(-1)
        moves = torch.cat([moves, torch.zeros_like(moves[:1])])  # none: never blocked
        return moves[torch.argmin(torch.cat([blocked, blocked.new_zeros(1)]).to(torch.uint8))]
