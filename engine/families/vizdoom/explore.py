"""Scripted policies over the real Doom that give a pose-memory world model what it has to learn.

`ExplorePolicy` walks open space and comes back: long walks with gentle random turning toward little
visited places, backing off and turning away at walls (after pressing use once there: doors open), full
turns in place, patrols (out and back, and out again) and walked circles of more than one lap (both come
back to places and headings long after a 32-frame context has forgotten them), strafing, circle-strafing
and occasional use and attack presses. `RandomPolicy` is the baseline: one of nine actions, held for a
random number of ticks. Both look only at the pose (not the frame), are deterministic given their seed and
observations, and serve one episode each.

`exploration_stats` measures a walk: 64-unit cells visited, revisits (the same cell within 30 degrees of
yaw, more than 32 ticks after the last such visit) and the fraction of ticks that do not move the player.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from engine.actions import doom as actions
from engine.families.vizdoom.game import yaw_direction

KEY_TURN = actions.KEY_TURN_DEGREES / actions.MAX_TURN_DEGREES
"""The `turn` value of a keyboard turn: turns in place run at Doom's fast keyboard speed."""
CELL_UNITS = 64.0
REVISIT_GAP_TICKS = 32
REVISIT_YAW_DEGREES = 30.0
STILL_UNITS = 1.0
"""A tick that moves the player less than this (in map units) counts as still."""
_MOVES = ("forward", "backward", "strafe_left", "strafe_right")


def _cell(xz: np.ndarray) -> tuple[int, int]:
    return int(np.floor(xz[0] / CELL_UNITS)), int(np.floor(xz[1] / CELL_UNITS))


def _wrap(degrees: float) -> float:
    return (degrees + 180.0) % 360.0 - 180.0


def _open_step(last_step: np.ndarray, action: np.ndarray, yaw: float) -> np.ndarray:
    """The (x, z) displacement of a tick in the open: per tic Doom keeps 0.90625 of the velocity and adds
    0.78125 units (0.75 strafing) along each held move (measured; the turn comes before the thrust)."""
    held = {name for name, value in zip(actions.BUTTONS, action, strict=False) if value > 0.5}
    forward, right = yaw_direction(yaw), yaw_direction(yaw + 90.0)
    thrust = (0.78125 * forward * (("forward" in held) - ("backward" in held))
              + 0.75 * right * (("strafe_right" in held) - ("strafe_left" in held)))
    if not thrust.any():
        return np.zeros(2)
    velocity, total = last_step / actions.FRAME_SKIP, np.zeros(2)
    for _ in range(actions.FRAME_SKIP):
        velocity = 0.90625 * velocity + thrust
        total += velocity
    return total


def _action(held: tuple[str, ...] = (), turn: float = 0.0) -> np.ndarray:
    action = actions.encode(held)
    action[actions.TURN] = turn
    return action


def _turn_in_place(degrees: float, held: tuple[str, ...] = ()) -> list[np.ndarray]:
    """Ticks that turn by exactly `degrees` (positive = right) at keyboard speed, the remainder last."""
    full, rest = divmod(abs(degrees), actions.KEY_TURN_DEGREES)
    sign = 1.0 if degrees >= 0 else -1.0
    ticks = [_action(held, sign * KEY_TURN) for _ in range(int(full))]
    if rest > 1e-6:
        ticks.append(_action(held, sign * rest / actions.MAX_TURN_DEGREES))
    return ticks


class ExplorePolicy:
    """Seeded scripted exploration; `act(pose, frame)` returns the next action vector.

    Maneuvers are generators of actions. Before each tick the pose tells whether the player is blocked:
    it moved less than half as far along its push as Doom's physics predicts in the open (so momentum, as
    when reversing, is no false alarm); a maneuver that is moving then stops, and the policy recovers from
    the wall. Walks head for the least visited cells that no known wall is in front of. The physics and
    the turn speeds assume the default frame skip (`actions.FRAME_SKIP`).
    """

    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)
        self._pose = np.zeros(5, dtype=np.float32)
        self._tick = 0
        self._step = np.zeros(2)
        self._last_action = actions.idle_action()
        self._visits: Counter[tuple[int, int]] = Counter()
        self._walls: Counter[tuple[int, int]] = Counter()
        self._used_at: dict[tuple[int, int], int] = {}
        self._blocked = self._hit_wall = False
        self._turn_noise = 0.0
        self._maneuver: Iterator[np.ndarray] = iter(())

    def act(self, pose: np.ndarray, frame: np.ndarray) -> np.ndarray:
        del frame  # walls are found from the pose alone
        self._observe(np.asarray(pose, dtype=np.float32))
        while (action := next(self._maneuver, None)) is None:
            wall, self._hit_wall = self._hit_wall, False
            self._maneuver = self._recover() if wall else self._choose()
        self._last_action = action
        return action.copy()

    def _observe(self, pose: np.ndarray) -> None:
        step = pose[[0, 2]] - self._pose[[0, 2]] if self._tick else np.zeros(2)
        expected = _open_step(self._step, self._last_action, float(pose[4]))
        self._pose, self._step, self._tick = pose, step, self._tick + 1
        self._visits[_cell(pose[[0, 2]])] += 1
        push = float(np.linalg.norm(expected))
        self._blocked = push > 1.5 and float(step @ expected) < 0.5 * push * push
        if self._blocked:
            ahead = pose[[0, 2]] + 32.0 * expected / push
            self._walls[_cell(ahead)] += 1

    def _wall(self) -> bool:
        """Whether the last move was blocked; the maneuver asking stops moving and the policy recovers."""
        if self._blocked:
            self._blocked, self._hit_wall = False, True
        return self._hit_wall

    def _hold(self, action: np.ndarray, ticks: int) -> Iterator[np.ndarray]:
        """Yield `action` up to `ticks` times, stopping at a wall; returns how many ticks it ran."""
        for done in range(ticks):
            if self._wall():
                return done
            yield action
        return ticks

    def _choose(self) -> Iterator[np.ndarray]:
        rng = self._rng
        roll = rng.random()
        if roll < 0.03:
            return iter(_turn_in_place(float(rng.choice([-360.0, 360.0]))))
        if roll < 0.33:
            return self._patrol(int(rng.integers(20, 45)), legs=int(rng.integers(3, 5)))
        if roll < 0.48:
            return self._circle(float(rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.3)), laps=rng.uniform(1.5, 2.2))
        if roll < 0.54:
            side = str(rng.choice(["strafe_left", "strafe_right"]))
            return self._hold(_action((side,)), int(rng.integers(6, 20)))
        if roll < 0.58:
            side, sign = (("strafe_right", -1.0), ("strafe_left", 1.0))[int(rng.integers(2))]
            return self._hold(_action((side,), sign * 0.35), int(rng.integers(20, 50)))
        return self._walk(int(rng.integers(20, 60)))

    def _recover(self) -> Iterator[np.ndarray]:
        """At a wall: use it, back off and walk at it again (a door is open enough about 14 ticks after use, as
        measured on E1M1's doors); else back away while turning to a novel heading (backing keeps the player
        moving, so turning away shows no still frames)."""
        cell = _cell(self._pose[[0, 2]])
        if self._tick - self._used_at.get(cell, -10**9) > 200:
            self._used_at[cell] = self._tick
            yield _action(("use", "backward"))
            yield from self._hold(_action(("backward",)), 8)
            self._hit_wall = False
            if (yield from self._hold(_action(("forward",)), 16)) == 16:
                return
        self._hit_wall = False
        heading = self._heading(np.arange(90.0, 271.0, 30.0))
        for turn in _turn_in_place(_wrap(heading - float(self._pose[4])), held=("backward",)):
            if self._wall():
                break
            yield turn
        self._hit_wall = False

    def _walk(self, ticks: int) -> Iterator[np.ndarray]:
        """Forward, steering for a novel heading with a wandering turn, now and then a use or an attack."""
        rng, target = self._rng, self._heading(np.arange(-150.0, 181.0, 30.0))
        for _ in range(ticks):
            if self._wall():
                return
            self._turn_noise = float(np.clip(0.85 * self._turn_noise + rng.normal(0.0, 0.04), -0.2, 0.2))
            error = _wrap(target - float(self._pose[4])) / actions.MAX_TURN_DEGREES
            extra = ("use",) if rng.random() < 0.01 else ("attack",) if rng.random() < 0.01 else ()
            yield _action(("forward", *extra), float(np.clip(0.5 * error + self._turn_noise, -KEY_TURN, KEY_TURN)))

    def _patrol(self, ticks: int, legs: int) -> Iterator[np.ndarray]:
        """Walk straight, turn 180 and walk back, `legs` times: from the third leg on it revisits the views of
        two legs earlier (the same places, the same way round)."""
        forward = _action(("forward",))
        for _ in range(legs - 1):
            ticks = yield from self._hold(forward, ticks)
            if ticks < 4:
                return
            # at a wall the player stands still, so it backs away while turning; else momentum carries it
            yield from _turn_in_place(180.0, held=("backward",) if self._hit_wall else ())
            self._hit_wall = False
        yield from self._hold(forward, ticks)

    def _circle(self, turn: float, laps: float) -> Iterator[np.ndarray]:
        """Walk a circle (radius 110-170 units) more than once round: the second lap revisits the first."""
        return self._hold(_action(("forward",), turn), int(laps * 360.0 / (abs(turn) * actions.MAX_TURN_DEGREES)))

    def _heading(self, offsets: np.ndarray) -> float:
        """The yaw, among the current yaw plus `offsets`, whose cells ahead are least visited and wall-free."""
        origin, yaw = self._pose[[0, 2]], float(self._pose[4])
        best, best_score = yaw, -np.inf
        for offset in offsets:
            heading = yaw + float(offset)
            direction = yaw_direction(heading)
            novelty = sum(1.0 / (1.0 + self._visits[_cell(origin + d * direction)]) for d in (128.0, 256.0, 384.0))
            walls = sum(self._walls[_cell(origin + d * direction)] for d in (32.0, 96.0, 160.0))
            score = novelty - 1.5 * min(walls, 2) - 0.002 * abs(float(offset)) + self._rng.uniform(0.0, 0.3)
            if score > best_score:
                best, best_score = heading, score
        return _wrap(best)


class RandomPolicy:
    """The baseline: one of nine actions, chosen uniformly, held for 1-8 ticks."""

    CHOICES: tuple[tuple[tuple[str, ...], float], ...] = (
        ((), 0.0), (("forward",), 0.0), (("backward",), 0.0), (("strafe_left",), 0.0), (("strafe_right",), 0.0),
        ((), -KEY_TURN), ((), KEY_TURN), (("forward",), -KEY_TURN), (("forward",), KEY_TURN))

    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)
        self._action = actions.idle_action()
        self._left = 0

    def act(self, pose: np.ndarray, frame: np.ndarray) -> np.ndarray:
        del pose, frame
        if self._left == 0:
            held, turn = self.CHOICES[int(self._rng.integers(len(self.CHOICES)))]
            self._action, self._left = _action(held, turn), int(self._rng.integers(1, 9))
        self._left -= 1
        return self._action.copy()


@dataclass(frozen=True)
class ExploreStats:
    cells: int
    revisits: int
    still_fraction: float


def exploration_stats(poses: np.ndarray) -> ExploreStats:
    """Coverage, revisits and still ticks of one walk's (T, 5) project poses (see the module docstring)."""
    poses = np.asarray(poses, dtype=np.float64)
    cells = np.floor(poses[:, [0, 2]] / CELL_UNITS).astype(np.int64)
    last_seen: dict[tuple[int, int], list[tuple[int, float]]] = {}
    revisits = 0
    for tick, (cell, yaw) in enumerate(zip(map(tuple, cells), poses[:, 4], strict=True)):
        visits = last_seen.setdefault(cell, [])
        near = [t for t, seen_yaw in visits if abs((yaw - seen_yaw + 180.0) % 360.0 - 180.0) <= REVISIT_YAW_DEGREES]
        if near and tick - max(near) > REVISIT_GAP_TICKS:
            revisits += 1
        visits.append((tick, yaw))
    steps = np.hypot(*np.diff(poses[:, [0, 2]], axis=0).T)
    still = float(np.mean(steps < STILL_UNITS)) if len(steps) else 0.0
    return ExploreStats(cells=len(last_seen), revisits=revisits, still_fraction=still)
