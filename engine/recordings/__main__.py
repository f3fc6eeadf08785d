"""`python -m engine.recordings recover PATH`: finish a recording that a killed process left unfinalised."""

from __future__ import annotations

import argparse
import sys

from engine.errors import EngineError
from engine.recordings.recovery import recover_segment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.recordings", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    recover = commands.add_parser("recover", help="rebuild the npz (and the mp4 if needed) from the spool")
    recover.add_argument("path", help="the segment's stem, .mp4, .npz or .spool")
    args = parser.parse_args(argv)
    try:
        npz = recover_segment(args.path)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"recovered {npz}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
