"""`python -m engine.train.collect_atari [options]`: the same as `python -m engine.train.collect --world atari`."""

from __future__ import annotations

import sys

from engine.train.collect import main

if __name__ == "__main__":
    sys.exit(main(["--world", "atari", *sys.argv[1:]]))
