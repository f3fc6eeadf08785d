"""`python -m engine.train.collect --world NAME [options]`: record training data from a real game.

The collector belongs to the family that knows the game (`collectors` in `engine.families`); this command finds
it by the world's name and hands it the other options (`--help` after `--world NAME` lists them)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from engine.families import collectors, resolve


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    known = collectors()
    world = None
    for i, arg in enumerate(args):
        if arg == "--world" and i + 1 < len(args):
            world = args[i + 1]
            del args[i:i + 2]
            break
        if arg.startswith("--world="):
            world = arg.partition("=")[2]
            del args[i]
            break
    if world not in known:
        print(f"error: --world must name a game with a collector: {', '.join(known)}"
              + (f" (got '{world}')" if world else ""), file=sys.stderr)
        return 2
    return int(resolve(known[world])(args))


if __name__ == "__main__":
    sys.exit(main())
