"""`python -m engine.eval --world WORLD --data RECORDINGS`: score a world against real recordings.

WORLD is a world name or yaml (a dream: its session must be able to continue from recorded frames), or one of
the oracles `copy-last` and `replay` (the harness's own checks). RECORDINGS are npz recordings or folders of
them (engine/recordings: frames, actions, poses), e.g. `data/doom/heldout` from `python -m engine.train.collect
--world doom-game --split heldout`. Prints a table, then one JSON line; writes a plot of PSNR against horizon
and a side-by-side video (real | dream | 4x difference) to --out.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from engine.core.config import load_world_config
from engine.core.loader import open_session
from engine.errors import ConfigError, EngineError
from engine.eval.protocol import (
    ORACLES,
    TEACHER_FORCED,
    Recording,
    Scores,
    SessionWorld,
    Settings,
    copy_last_open_loop,
    copy_last_teacher_forced,
    memory_test,
    open_loop,
    teacher_forced,
    teacher_forced_key,
)
from engine.eval.report import TableRow, final_json, format_table, write_plot, write_side_by_side
from engine.recordings import read_recording


def recording_paths(paths: list[str]) -> list[Path]:
    found: list[Path] = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            found += sorted(path.rglob("*.npz"))
        elif path.suffix == ".npz" and path.is_file():
            found.append(path)
        else:
            raise ConfigError(f"--data {entry}: expected a recording .npz or a folder of them")
    if not found:
        raise ConfigError(f"--data {' '.join(paths)}: no recording .npz found")
    return found


def load(path: Path) -> Recording:
    data = read_recording(path)
    return Recording(name=path.stem, frames=torch.from_numpy(data["frames"]),
                     actions=torch.from_numpy(data["actions"]), poses=torch.from_numpy(data["poses"]))


def make_world(args: argparse.Namespace, memory: bool):
    if args.world in ORACLES:
        return ORACLES[args.world]()
    overrides = [*args.set, f"memory.enabled={'true' if memory else 'false'}"] if args.memory_key else list(args.set)
    session = open_session(args.world, device=args.device, dtype=args.dtype, steps=args.steps, seed=args.seed,
                           allow_download=False, overrides=overrides)
    return SessionWorld(session)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m engine.eval", description=__doc__.splitlines()[0])
    parser.add_argument("--world", required=True, help="world name or yaml, or an oracle: copy-last, replay")
    parser.add_argument("--data", nargs="+", required=True, help="recordings (.npz) or folders of them")
    parser.add_argument("--horizons", default="1,8,32,128", help="open-loop horizons, comma-separated")
    parser.add_argument("--memory", choices=("on", "off"), default="on", help="memory of the scored world's rows")
    parser.add_argument("--episodes", type=int, default=0, help="score only the first N recordings (0: all)")
    parser.add_argument("--tf-frames", type=int, default=200, help="teacher-forced frames per recording")
    parser.add_argument("--starts", type=int, default=4, help="open-loop start points per recording")
    parser.add_argument("--no-memory-test", action="store_true", help="skip the revisit protocol")
    parser.add_argument("--out", type=Path, default=Path("eval"), help="folder for the plot and the video")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--steps", type=int, default=None, help="denoising steps per frame")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="world setting")
    args = parser.parse_args(argv)
    try:
        args.horizons = tuple(sorted({int(h) for h in args.horizons.split(",")}))
    except ValueError:
        raise ConfigError(f"--horizons {args.horizons}: expected comma-separated frame counts, e.g. 1,8,32") from None
    if min(args.horizons) < 1 or args.tf_frames < 1 or args.starts < 1 or args.episodes < 0:
        raise ConfigError("--horizons, --tf-frames and --starts must be >= 1 and --episodes >= 0")
    # worlds with a memory switch are scored with it on and off; others have one condition
    args.memory_key = args.world not in ORACLES and OmegaConf.select(
        load_world_config(args.world, args.set), "memory.enabled") is not None
    return args


def evaluate(args: argparse.Namespace) -> dict:
    settings = Settings(horizons=args.horizons, teacher_forced_frames=args.tf_frames, starts=args.starts,
                        seed=args.seed)
    paths = recording_paths(args.data)[: args.episodes or None]
    world = make_world(args, memory=args.memory == "on")
    memory_worlds = {}
    if not args.no_memory_test and (args.memory_key or args.world in ORACLES):
        memory_worlds = {"revisit memory on": world if args.memory == "on" else make_world(args, True),
                         "revisit memory off": world if args.memory == "off" else make_world(args, False)}
        if args.world in ORACLES:
            memory_worlds = {"revisit memory on": world}
    scores, revisit_count, start = Scores(), 0, time.perf_counter()
    for path in tqdm(paths, desc="recordings", unit="recording"):
        rec = load(path)
        for candidate in {id(w): w for w in [world, *memory_worlds.values()]}.values():
            candidate.bind(rec)
        teacher_forced(world, rec, "world", scores, settings)
        teacher_forced(world, rec, "shuffled actions", scores, settings,
                       actions=rec.actions[torch.randperm(len(rec.actions), generator=torch.Generator().manual_seed(
                           settings.seed))])
        copy_last_teacher_forced(rec, scores, settings)
        open_loop(world, rec, "world", scores, settings, keep_video=not scores.videos)
        open_loop(world, rec, "shuffled actions", scores, settings, shuffle=True)
        copy_last_open_loop(rec, scores, settings)
        if memory_worlds:
            revisit_count += memory_test(memory_worlds, rec, scores, settings)
    steps = world.session.steps if isinstance(world, SessionWorld) else None  # the world's own unless --steps
    return report(args, scores, revisit_count, len(paths), time.perf_counter() - start, steps)


def report(args: argparse.Namespace, scores: Scores, revisits: int, recordings: int, seconds: float,
           steps: int | None) -> dict:
    psnr, ssim = scores.psnr, scores.ssim
    rows = []
    for condition in ("world", "shuffled actions", "copy-last"):
        key = teacher_forced_key(condition)
        rows.append(TableRow(condition=condition, teacher_forced_psnr=psnr.stats(key, TEACHER_FORCED).mean,
                             teacher_forced_ssim=ssim.stats(key, TEACHER_FORCED).mean,
                             open_loop_psnr=psnr.curve(condition)))
        rows.append(TableRow(condition=f"{condition} (mean over 1..h)", open_loop_psnr=psnr.curve(f"{condition} mean")))
    memory_rows = {c: (psnr.stats(c, 0).mean, ssim.stats(c, 0).mean, psnr.stats(c, 0).count)
                   for c in ("revisit memory on", "revisit memory off", "revisit copy-last") if (c, 0) in psnr.keys()}  # noqa: SIM118 (not a dict)
    print(format_table(rows))
    for condition, (p, s, n) in memory_rows.items():
        print(f"{condition:<20} PSNR {p:6.2f} dB  SSIM {s:.4f}  ({n} frames, {revisits} revisits)")
    args.out.mkdir(parents=True, exist_ok=True)
    plot = write_plot({c: psnr.curve(c) for c in ("world", "shuffled actions", "copy-last")}, args.out / "psnr.png")
    video = None
    if scores.videos:
        _, real, dream = scores.videos[0]
        video = write_side_by_side(real, dream, args.out / "side_by_side.mp4", fps=17.5)
    return {"eval": str(args.world), "recordings": recordings, "memory": args.memory, "steps": steps,
            "teacher_forced": {c: {"psnr": psnr.stats(teacher_forced_key(c), 0).mean,
                                   "ssim": ssim.stats(teacher_forced_key(c), 0).mean}
                               for c in ("world", "shuffled actions", "copy-last")},
            "open_loop_psnr": {c: psnr.curve(c) for c in ("world", "shuffled actions", "copy-last")},
            "open_loop_mean_psnr": {c: psnr.curve(f"{c} mean") for c in ("world", "shuffled actions", "copy-last")},
            "revisits": {"count": revisits, **{c: {"psnr": p, "ssim": s, "frames": n}
                                                for c, (p, s, n) in memory_rows.items()}},
            "plot": str(plot), "video": str(video) if video else None, "seconds": round(seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse(argv)
        result = evaluate(args)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(final_json(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
