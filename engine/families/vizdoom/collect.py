"""Training and held-out data from the real Doom: `python -m engine.train.collect --world doom-game ...`.

Each episode is a recording (engine/recordings: mp4 + npz with frames, actions, poses and the game's `depth`
buffer) of the doom-game world driven through the same Runner as every world, by a seeded policy (`explore`:
long walks, 360-degree turns, out-and-back patrols and loops that come back to places after more ticks than a
model's context holds; `random`: persistent random actions). Frame 0 is the start point (zero action); frame t
is what action t led to.

Splits never share a seed or a start point: `train` uses seeds 0.. and `heldout` seeds from 1_000_000; each
episode starts after a seeded number of exploration ticks (0 to `--max-start-offset`), so start points differ.

    python -m engine.train.collect --world doom-game --episodes 120 --policy explore --out data/doom
    python -m engine.train.collect --world doom-game --episodes 12 --split heldout --out data/doom
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from engine.core.loader import open_session
from engine.core.runner import Runner
from engine.errors import EngineError
from engine.families.vizdoom.explore import ExplorePolicy, RandomPolicy
from engine.families.vizdoom.world import DOOM_TICS_PER_SECOND, DoomGameSession
from engine.recordings import SegmentWriter

POLICIES = {"explore": ExplorePolicy, "random": RandomPolicy}
SPLIT_SEEDS = {"train": 0, "heldout": 1_000_000}


def start_offset(seed: int, max_offset: int) -> int:
    """The seeded number of exploration ticks before an episode starts."""
    return int(np.random.default_rng([seed, 7]).integers(0, max_offset + 1)) if max_offset else 0


def collect_episode(session: DoomGameSession, runner: Runner, stem: Path, *, seed: int, offset: int, ticks: int,
                    policy: str, split: str) -> int:
    """One recording of `ticks` ticks after the start point; returns the frames written."""
    session.seed, session.offset = seed, offset
    first = runner.reset()
    pose = session.pose.numpy()
    act = POLICIES[policy](seed)
    fps = DOOM_TICS_PER_SECOND / session.settings.frame_skip
    metadata = {"generator": "engine.train.collect --world doom-game", "policy": policy, "split": split,
                "seed": seed, "start_offset": offset, **session.settings_metadata()}
    with SegmentWriter(stem, session.world, fps=fps, metadata=metadata) as writer:
        writer.append(first.frame, np.zeros(session.action_dim, np.float32), pose=pose, timestamp=0.0,
                      extra=runner.prompt_extras())
        frame = first.frame
        for t in range(1, ticks + 1):
            tick = runner.step(torch.from_numpy(act.act(pose, frame)))
            frame, pose = tick.frame, tick.pose
            writer.append(frame, tick.action.numpy(), pose=pose, timestamp=t / fps, extra=tick.extras)
            if tick.episode_over:
                break
    return writer.frames_appended


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.train.collect --world doom-game",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="doom-game", help="the game's world yaml (name or path)")
    parser.add_argument("--episodes", type=int, default=120)
    parser.add_argument("--ticks", type=int, default=1000, help="ticks per episode after the start point")
    parser.add_argument("--policy", choices=list(POLICIES), default="explore")
    parser.add_argument("--split", choices=list(SPLIT_SEEDS), default="train")
    parser.add_argument("--seed", type=int, default=0, help="first episode's seed within the split")
    parser.add_argument("--max-start-offset", type=int, default=600, help="most exploration ticks before a start")
    parser.add_argument("--out", type=Path, default=Path("data/doom"), help="recordings go to OUT/<split>/")
    args = parser.parse_args(argv)
    if args.episodes < 1 or args.ticks < 1 or args.max_start_offset < 0 or args.seed < 0:
        print("error: --episodes and --ticks must be >= 1, --seed and --max-start-offset >= 0", file=sys.stderr)
        return 2
    try:
        session = open_session(args.config, device="cpu")
        if not isinstance(session, DoomGameSession):
            raise EngineError(f"--config {args.config} is not a doom-game world")
        runner = Runner(session)
        folder = args.out / args.split
        frames, start = 0, time.perf_counter()
        for k in tqdm(range(args.episodes), desc=f"doom {args.split} episodes", unit="episode"):
            seed = SPLIT_SEEDS[args.split] + args.seed + k
            frames += collect_episode(session, runner, folder / f"episode_{seed:07d}", seed=seed,
                                      offset=start_offset(seed, args.max_start_offset), ticks=args.ticks,
                                      policy=args.policy, split=args.split)
        elapsed = time.perf_counter() - start
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size = sum(p.stat().st_size for p in folder.glob("episode_*.*"))
    hours = frames / (DOOM_TICS_PER_SECOND / session.settings.frame_skip) / 3600
    print(f"wrote {args.episodes} episodes, {frames} frames ({hours:.2f} h of play, {size / 2**20:.0f} MiB) to "
          f"{folder} in {elapsed:.0f} s ({frames / elapsed:.0f} frames/s)")
    return 0
