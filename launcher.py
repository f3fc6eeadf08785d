"""Play a world model: `python launcher.py` (the shipped Doom world, in a window), `--world NAME`, or `--headless`."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from engine.checkpoints.resolve import parse_weight_overrides
from engine.core.cli import OneLineParser, integer, number, seed
from engine.core.config import available_worlds
from engine.errors import ConfigError, EngineError, display_path

MAX_FRAMES = 10**6
"""Frames of one headless run (14 hours at 20 fps); the run keeps one action row per frame in memory."""
MAX_RECORD_MB = 2**20
MAX_WINDOW = 16384


def window_size(text: str) -> tuple[int, int]:
    width, sep, height = text.lower().partition("x")
    if (not sep or not width.isdigit() or not height.isdigit() or not 1 <= int(width) <= MAX_WINDOW
            or not 1 <= int(height) <= MAX_WINDOW):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels, each 1..{MAX_WINDOW} (e.g. 1280x720), "
                                         f"got '{text}'")
    return int(width), int(height)


def add_player_arguments(parser: argparse.ArgumentParser) -> None:
    player = parser.add_argument_group("player window")
    player.add_argument("--window-size", type=window_size, metavar="WxH",
                        help="window size in pixels (default: the world's `player.window_size`, else 1280x720)")
    player.add_argument("--filter", choices=("nearest", "bilinear", "sharp"),
                        help="how frames are scaled up (default: the world's `player.filter`, else bilinear)")
    player.add_argument("--fullscreen", action="store_true", help="start in fullscreen (F11 toggles)")
    player.add_argument("--fps", type=number(0, 1000),
                        help="model ticks per second (default: the world's fps; 0: as fast as the model goes)")
    player.add_argument("--mouse-sensitivity", type=number(0, 100), default=1.0,
                        help="multiplies the keymap's degrees of camera turn per pixel of mouse motion")
    player.add_argument("--keymap", type=Path, help="a keymap .yaml of your own (default: the world's)")
    player.add_argument("--record", action="store_true", help="start recording at launch (, toggles)")
    player.add_argument("--recordings", type=Path, default=Path("recordings"),
                        help="folder for recordings (<world>/<YYYYmmdd-HHMMSS>.mp4 + .npz) and screenshots")
    player.add_argument("--record-max-mb", type=integer(0, MAX_RECORD_MB), default=1024,
                        help="split a recording into parts of about this size (0: never split)")
    source = player.add_mutually_exclusive_group()
    source.add_argument("--replay", type=Path, metavar="NPZ",
                        help="feed a recording's actions through the model and check its frames come out the same")
    source.add_argument("--view", type=Path, metavar="FILE", help="step through a recording (.npz or .mp4)")
    source.add_argument("--side-by-side", action="store_true",
                        help="the world's ground truth (the real game) on the left, the dream on the right, both fed "
                             "your input (worlds that name a `ground_truth`: doom)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python launcher.py", description=__doc__)
    world = parser.add_argument_group("world")
    world.add_argument("--world", default="doom",
                       help=f"one of: {', '.join(available_worlds())} (default: doom, the world shipped in checkpoints/doom)")
    world.add_argument("--config", type=Path, help="a world .yaml file of your own (overrides --world)")
    world.add_argument("--weights", action="append", default=[], metavar="ROLE=PATH",
                       help="use this checkpoint file for a network role (dit=..., vae=...)")
    world.add_argument("--offline", action="store_true", help="never download; report what is missing")
    world.add_argument("--prompt", type=Path, help="prompt image or video (default: the world's spawn frame)")
    world.add_argument("--game", help="game of a multi-game world (atari: Breakout, Pong, ...); same as --set game=NAME")
    world.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a setting of the world config (e.g. --set sampler.num_steps_denoising=5)")
    world.add_argument("--agent", action="store_true",
                       help="let the world's trained agent play instead of you (worlds that ship one: atari)")
    run = parser.add_argument_group("inference")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    run.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), help="default: bf16 on CUDA, fp32 on CPU")
    run.add_argument("--backend", choices=("auto", "eager", "compile", "trt"), default="auto",
                     help="how the network calls run: eager PyTorch, compile (torch.compile + CUDA graphs), trt "
                          "(engines from build_trt.py); auto: the fastest available, named in the HUD and log")
    run.add_argument("--steps", type=integer(1), help="denoising steps per frame (default: the world's)")
    run.add_argument("--seed", type=seed, default=0, help="0 .. 2**32 - 1")
    run.add_argument("--sampler", choices=("cached", "reference"), default="cached",
                     help="cached: exact, context computed once; reference: the original algorithm")
    headless = parser.add_argument_group("headless run")
    headless.add_argument("--headless", action="store_true", help="no window: generate --frames frames to --out")
    headless.add_argument("--actions", type=Path, help="actions: VPT .jsonl, one-hot .safetensors or recording .npz")
    headless.add_argument("--action-offset", type=integer(0), default=0, help="first action row to use")
    headless.add_argument("--frames", type=integer(1, MAX_FRAMES), default=32,
                          help="frames in the output, prompt frames included")
    headless.add_argument("--out", type=Path, default=Path("run.mp4"), help="output .mp4 (the .npz goes beside it)")
    add_player_arguments(parser)
    return parser


def check_arguments(args: argparse.Namespace) -> None:
    """What the parser cannot check alone: the device name, and for a headless run its input files and that its
    frames fit on disk."""
    from engine.backends.device import check_device_name

    check_device_name(args.device)
    args.weights = parse_weight_overrides(args.weights)
    if args.headless:
        check_inputs(args)
        check_headless_output(args)


def check_inputs(args: argparse.Namespace) -> None:
    """The action and prompt files read before any weights load: an action file's rows are numbers within the
    action spaces' range, a prompt image is a readable image of sane size (videos and recordings are read by
    the world when it opens)."""
    from engine.actions.vpt import read_action_rows
    from engine.core.prompt import VIDEO_SUFFIXES, check_prompt_image

    if args.actions is not None:
        read_action_rows(args.actions, action_dim=None)
    if args.prompt is not None and args.prompt.suffix.lower() not in (*VIDEO_SUFFIXES, ".npz"):
        check_prompt_image(args.prompt)


def check_headless_output(args: argparse.Namespace) -> None:
    """`--frames` frames of the world fit in the folder of `--out`: the .npz keeps every frame uncompressed (written
    in place as they come, `engine.recordings.npzfile`), and the mp4 beside it takes a fraction of that (at most a
    quarter of the raw frames counted here; x264 of game frames is far smaller)."""
    from engine.core.config import load_world
    from engine.core.loader import world_overrides
    from engine.core.schema import gigabytes

    out = args.out
    height, width = load_world(str(args.config or args.world), world_overrides(args)).settings.image_size()
    if args.side_by_side:
        width *= 2
    frame_bytes = height * width * 3
    needed = args.frames * (frame_bytes + 1024 + frame_bytes // 4)
    folder = next(p for p in (out.absolute().parent, *out.absolute().parents) if p.exists())
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise ConfigError(f"--frames {args.frames}: {width}x{height} frames take about {gigabytes(needed)} while "
                          f"they are written, {display_path(folder)} has {gigabytes(free)} free")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_arguments(args)
        if args.headless:
            from app.headless import run_headless

            run_headless(args)
        else:
            os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
            from app.player import run_player

            run_player(args)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
