"""Headless run: prompt + action file -> mp4 + npz, no window (launcher.py --headless)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from engine.actions.keymap import Keymap
from engine.actions.vpt import load_action_stream
from engine.backends.device import leave_core_for_io
from engine.checkpoints.verify import files_sha256
from engine.core.loader import open_session, session_extras, with_ground_truth, world_overrides
from engine.core.runner import Runner, Tick
from engine.errors import ConfigError
from engine.recordings import RecordingError, SegmentWriter, install_signal_finalizers
from engine.recordings.format import with_suffix
from engine.recordings.recovery import spool_in_the_way


def idle_actions(cfg: DictConfig, frames: int, action_dim: int) -> torch.Tensor:
    """(frames, A): what a player touching nothing sends each tick, from the world's keymap (zeros for VPT,
    NOOP for Atari, the centred mouse bins for DIAMOND's CS:GO)."""
    name = OmegaConf.select(cfg, "actions.keymap")
    if name is None:
        return torch.zeros((frames, action_dim))
    keymap = Keymap.load(name, OmegaConf.select(cfg, "actions.space"))
    return keymap.to_action((), (), 0.0, 0.0).float().expand(frames, -1).clone()


def output_stem(out: Path) -> Path:
    """The stem `--out` names; refused if a recording (or part of one) is already there, and a killed
    recording's spool with the command that recovers it."""
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder: name the output file, e.g. {out / 'run.mp4'}")
    stem = out.with_suffix("")
    if with_suffix(stem, ".spool").is_dir():
        raise ConfigError(f"--out {out}: {spool_in_the_way(stem)}")
    taken = [with_suffix(stem, suffix) for suffix in (".mp4", ".npz", ".spool", "-part2.mp4", "-part2.npz")]
    for path in taken:
        if path.exists():
            raise ConfigError(f"--out {out}: {path} already exists; choose another --out or delete the old recording")
    return stem


def run_headless(args: argparse.Namespace) -> None:
    """Generate `--frames` frames into `--out`; SIGTERM/SIGHUP/Ctrl+C and write errors still finalise both files."""
    stem = output_stem(args.out)
    restore = install_signal_finalizers()
    try:
        _generate(args, stem)
    finally:
        restore()


def _generate(args: argparse.Namespace, stem: Path) -> None:
    session = open_session(
        str(args.config or args.world), device=args.device, dtype=args.dtype, checkpoints=args.weights,
        prompt=args.prompt, prompt_offset=args.action_offset if args.prompt and args.prompt.suffix == ".npz" else 0, sampler=args.sampler,
        steps=args.steps, seed=args.seed,
        allow_download=not args.offline, overrides=world_overrides(args), extra=session_extras(args))
    if args.side_by_side:
        session = with_ground_truth(session, args.seed)
    leave_core_for_io(session.device)
    prompt = session.prompt_frames()
    prompt_frames = prompt.shape[0]
    if args.frames <= prompt_frames:
        raise ConfigError(f"--frames {args.frames} must exceed the {prompt_frames} prompt frame(s)")
    if args.actions is None:
        actions = idle_actions(session.cfg, args.frames, session.action_dim)
    else:
        actions = load_action_stream(args.actions, args.frames, offset=args.action_offset,
                                     action_dim=session.action_dim)
        if actions.shape[1] != session.action_dim:
            raise ConfigError(f"action file {args.actions} has {actions.shape[1]} columns, world '{session.world}' "
                              f"takes {session.action_dim} (VPT .jsonl files are for the Minecraft worlds)")
    metadata = session.metadata() | {
        "checkpoint_sha256": files_sha256(session.checkpoint_files),
        "prompt": str(args.prompt or OmegaConf.select(session.cfg, "prompt.file", default="")),
        "actions_file": str(args.actions or ""),
        "action_offset": args.action_offset,
    }
    writer = SegmentWriter(stem, world=session.world, fps=session.fps, metadata=metadata)
    runner = Runner(session)
    start = time.perf_counter()

    def record(frame: np.ndarray, action: np.ndarray, tick: Tick | None) -> None:
        # Worlds with episodes restart when one is over, as in the player; each frame records its episode number.
        extras = runner.prompt_extras() if tick is None else dict(tick.extras)
        if session.episodic:
            extras["episode"] = np.asarray(runner.episode, dtype=np.int32)
        pose = session.pose if tick is None else tick.pose
        writer.append(frame, action, pose=pose, timestamp=time.perf_counter() - start, extra=extras)

    try:
        for j in range(prompt_frames):
            record(prompt[j].cpu().numpy(), actions[j].numpy(), None)
        for j in tqdm(range(prompt_frames, args.frames), desc=f"{session.world} frames", unit="frame"):
            if writer.error is not None:
                break  # the recording stopped (disk full...): generating more would be lost work
            tick = runner.step(actions[j])
            record(tick.frame, tick.action.numpy(), tick)
            if tick.episode_over:
                runner.reset()
    except BaseException as exc:  # the files are finalised with what was generated
        try:
            writer.close()
        except RecordingError as err:
            print(f"error: {err}", file=sys.stderr)
        else:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):  # a signal or Ctrl+C
                print(f"stopped early: {stem}.mp4 and {stem}.npz hold the {writer.frames_kept} frames generated",
                      file=sys.stderr)
        raise
    writer.close()
    print(f"wrote {stem}.mp4 and {stem}.npz ({writer.frames_kept} frames)")
