"""`python -m engine.recordings recover PATH`: finish a recording that a killed process left unfinalised."""

from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

from engine.errors import EngineError
from engine.recordings.format import with_suffix
from engine.recordings.npzfile import frames_and_metadata
from engine.recordings.recovery import recover_segment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.recordings", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    recover = commands.add_parser("recover", help="finish the npz and mp4 of a segment from its spool")
    recover.add_argument("path", help="the segment's stem, .mp4, .npz or .spool")
    args = parser.parse_args(argv)
    path = Path(args.path)
    stem = path.with_suffix("") if path.suffix.lower() in (".mp4", ".npz", ".spool") else path
    unfinished = with_suffix(stem, ".spool").is_dir()
    try:
        npz = recover_segment(stem)
        frames = frames_and_metadata(npz)[0]
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:  # the finished npz is unreadable
        print(f"error: {stem}.npz is not a readable recording ({exc})", file=sys.stderr)
        return 2
    print(f"recovered {stem}.mp4 and {npz.name}: {frames} frames" if unfinished
          else f"{npz} is complete ({frames} frames): nothing to recover")
    return 0


if __name__ == "__main__":
    sys.exit(main())
