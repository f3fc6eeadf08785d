"""Train a world model (Oasis, DIAMOND, WorldMAR) from a YAML config.

`python -m engine.train --config NAME_OR_PATH [KEY=VALUE ...]`; several processes:
`torchrun --nproc_per_node N -m engine.train --config ...` (DDP, or FSDP with distributed.strategy=fsdp).
"""

from __future__ import annotations

import argparse
import os
import sys

from engine.core.cli import OneLineParser
from engine.errors import EngineError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineParser(prog="python -m engine.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True,
                        help="a config name under engine/train/configs (e.g. oasis_tiny) or a path to a .yaml file")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="OmegaConf dotlist overrides, e.g. train.steps=200 data.paths=[data/vpt]")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        from engine.train.config import load_train_config
        from engine.train.trainer import summary_line, train

        result = train(load_train_config(args.config, args.overrides))
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", 0)) == 0:
        print(summary_line(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
