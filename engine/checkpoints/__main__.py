"""`python -m engine.checkpoints verify|convert|sha256`: check, convert and hash weight files.

Exit status: 0 when every file fits, 1 when `verify` found a file that does not, 2 for bad input (one line).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from omegaconf import DictConfig, OmegaConf

from engine.checkpoints.resolve import resolve_checkpoint_files
from engine.checkpoints.verify import convert_to_safetensors, file_sha256
from engine.core.cli import OneLineParser
from engine.core.config import load_world_config
from engine.core.networks import verify_world
from engine.core.schema import INTERPOLATION
from engine.errors import CheckpointError, ConfigError, EngineError


def assign_files(world_cfg: DictConfig, args: Sequence[str]) -> dict[str, Path]:
    """{role: path} from `role=path` words and bare paths.

    A bare path goes to the role whose configured file has its name, else to the next role
    (in config order) that has none yet; roles configured with the same file (DIAMOND's networks
    share one checkpoint) take it together.
    """
    roles = [str(role) for role in world_cfg.checkpoints.files]
    entries = {str(role): str(entry) for role, entry in world_cfg.checkpoints.files.items()}
    by_name = {Path(entry).name: role for role, entry in reversed(entries.items())}
    files: dict[str, Path] = {}
    bare: list[Path] = []
    for word in args:
        role, sep, value = word.partition("=")
        if sep and role in roles:
            if role in files:
                raise CheckpointError(f"two files given for role '{role}': {files[role]} and {value}")
            files[role] = Path(value)
        elif sep and not Path(word).exists():
            raise CheckpointError(f"unknown role '{role}' in '{word}': world '{world_cfg.name}' has "
                                  f"{', '.join(roles)}")
        else:
            bare.append(Path(word))
    for path in bare:
        role = by_name.get(path.name)
        if role is None or role in files:
            role = next((r for r in roles if r not in files), None)
        if role is None:
            raise CheckpointError(f"{path}: every role of world '{world_cfg.name}' ({', '.join(roles)}) "
                                  "already has a file")
        files |= {other: path for other in roles if entries[other] == entries[role] and other not in files}
    return files


def named_settings(world_cfg: DictConfig, words: Sequence[str]) -> list[str]:
    """`KEY=VALUE` settings read off the given files' names where the world names its checkpoint files after a
    setting: `atari_100k/models/${game}.pt` and `Alien.pt` give `game=Alien`."""
    entries = OmegaConf.to_container(world_cfg.checkpoints.files, resolve=False)
    names = [Path(word.partition("=")[2] if "=" in word and not Path(word).exists() else word).name for word in words]
    settings: dict[str, str] = {}
    for entry in entries.values():
        pattern = PurePosixPath(str(entry)).name
        keys = INTERPOLATION.findall(pattern)
        if len(keys) != 1:
            continue
        regex = re.escape(pattern).replace(re.escape(f"${{{keys[0]}}}"), r"(?P<value>.+)")
        for name in names:
            match = re.fullmatch(regex, name)
            if match:
                settings.setdefault(keys[0], match.group("value"))
    return [f"{key}={value}" for key, value in settings.items()]


def verify_config(args: argparse.Namespace) -> DictConfig:
    """The world to check against: with --game/--set as given, else with the settings the file names carry
    (when they make a valid world: a file of another name keeps the world's own)."""
    given = [*args.set, *([f"game={args.game}"] if args.game else [])]
    cfg = load_world_config(args.world, given)
    named = [] if given else [entry for entry in named_settings(cfg, args.files)
                              if str(OmegaConf.select(cfg, entry.partition("=")[0])) != entry.partition("=")[2]]
    if named:
        try:
            cfg = load_world_config(args.world, named)
        except ConfigError:
            return cfg
        print(f"world '{cfg.name}' with {' '.join(named)} (from the file name; --set or --game chooses another)")
    return cfg


def cmd_verify(args: argparse.Namespace) -> int:
    cfg = verify_config(args)
    files = assign_files(cfg, args.files)
    if not files:
        files = resolve_checkpoint_files(cfg, allow_download=args.download)
    reports = verify_world(cfg, files)
    for report in reports:
        print("\n".join(report.lines()), flush=True)
    return 0 if all(report.ok for report in reports) else 1


def cmd_convert(args: argparse.Namespace) -> int:
    target = args.target or args.source.with_suffix(".safetensors")
    if target.exists() and not args.force:
        raise CheckpointError(f"{target} exists: pass --force to overwrite it")
    target, dropped = convert_to_safetensors(args.source, target, args.prefix)
    if dropped:
        print(f"shared tensors stored once: {', '.join(f'{d} (= {k})' for d, k in sorted(dropped.items()))}")
    print(f"wrote {target} (sha256 {file_sha256(target)})")
    return 0


def cmd_sha256(args: argparse.Namespace) -> int:
    for path in args.paths:
        if not path.is_file():
            raise CheckpointError(f"{path} does not exist")
        print(f"{file_sha256(path)}  {path}", flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m engine.checkpoints", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser(
        "verify", help="check files' keys and shapes against a world's networks",
        description="Check each file against the world's network for its role without loading the weights; "
                    "prints 'ok: FILE (...)' per file, or every missing, unexpected and wrong-shaped key and every "
                    "tensor whose values cannot be weights (integers, NaN, infinities, beyond +-1e6).")
    verify.add_argument("world", help="world name (minecraft) or a world .yaml file")
    verify.add_argument("files", nargs="*", metavar="ROLE=PATH|PATH",
                        help="files to check (default: the world's own files, found locally or in the HF cache)")
    verify.add_argument("--download", action="store_true", help="download the world's files when missing")
    verify.add_argument("--game", help="game of a multi-game world (atari: Alien, Pong, ...); default: from the file "
                                       "name (atari_100k/models/<Game>.pt), else the world's")
    verify.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting of the world config, as the launcher's --set")
    verify.set_defaults(run=cmd_verify)
    convert = commands.add_parser("convert", help="convert a .pt/.pth/.ckpt state dict to .safetensors")
    convert.add_argument("source", type=Path)
    convert.add_argument("target", type=Path, nargs="?", help="default: SOURCE with suffix .safetensors")
    convert.add_argument("--prefix", help="keep only keys with this prefix, stripped (e.g. denoiser.)")
    convert.add_argument("--force", action="store_true", help="overwrite TARGET")
    convert.set_defaults(run=cmd_convert)
    sha = commands.add_parser("sha256", help="print files' sha256 (as recorded in recordings' metadata)")
    sha.add_argument("paths", type=Path, nargs="+")
    sha.set_defaults(run=cmd_sha256)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
