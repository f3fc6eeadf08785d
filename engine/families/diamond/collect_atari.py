"""Real Atari episodes for DIAMOND training: the emulator with DIAMOND's preprocessing (`ale_env`),
played by a random policy, saved as recordings (engine/recordings) with `rewards` and `ends` extras.

Recording convention: actions[t] is the one-hot action that led into frame t (row 0 all zeros), rewards[t]
and ends[t] belong to that transition. A life loss ends the episode, as DIAMOND's training env does
(`done_on_life_loss`); `max_steps` cuts an episode without an end.

    python -m engine.train.collect --world atari --game Breakout --out data/atari/Breakout [--episodes 8 --max-steps 200]
    python -m engine.train.collect_atari --game Breakout ...      (the same)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from engine.families.diamond.ale_env import AtariEnv, AtariEnvSettings
from engine.recordings import SegmentWriter

REPEAT_PROBABILITY = 0.75  # the random player holds an action for a few steps, like a person


def collect_episode(env: AtariEnv, stem: Path, max_steps: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    num_actions = env.num_actions
    metadata = {"generator": "engine.train.collect_atari", "game": env.settings.game, "seed": seed,
                "action_names": list(env.action_names), "policy": "random"}
    with SegmentWriter(stem, f"atari-{env.settings.game}", fps=15, metadata=metadata) as rec:
        obs = env.reset(seed=seed)
        zero = np.zeros(num_actions, dtype=np.float32)
        rec.append(obs, zero, timestamp=0.0, extra={"rewards": np.float32(0), "ends": np.bool_(False)})
        action = 0
        for t in range(1, max_steps):
            if rng.random() > REPEAT_PROBABILITY:
                action = int(rng.integers(num_actions))
            step = env.step(action)
            end = step.terminated or step.life_loss
            one_hot = zero.copy()
            one_hot[action] = 1
            rec.append(step.obs, one_hot, timestamp=t / 15,
                       extra={"rewards": np.float32(step.reward), "ends": np.bool_(end)})
            if end or step.truncated:
                break
    return stem.with_suffix(".npz")


def collect_atari(game: str, out: Path, episodes: int = 8, max_steps: int = 200, size: int = 64,
                  seed: int = 0) -> list[Path]:
    """`episodes` recordings `out/episode_NNN.npz` (+ .mp4) of `game` at size x size."""
    env = AtariEnv(AtariEnvSettings(game=game, size=size))
    try:
        return [collect_episode(env, out / f"episode_{k:03d}", max_steps, seed * 1000 + k) for k in range(episodes)]
    finally:
        env.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.train.collect --world atari",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--game", default="Breakout")
    parser.add_argument("--out", type=Path, default=None, help="default: data/atari/<game>")
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = args.out or Path("data/atari") / args.game
    for path in collect_atari(args.game, out, args.episodes, args.max_steps, args.size, args.seed):
        print(path)
    return 0
