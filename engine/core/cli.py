"""What the command lines share: argparse errors as one line, and argument types that refuse values no command
can use (negative or zero counts, NaN and infinities, seeds beyond 32 bits)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import NoReturn

from engine.errors import ConfigError

MAX_SEED = 2**32 - 1
"""Seeds are 0 .. MAX_SEED: what every generator of the project takes (ViZDoom's is 32-bit)."""


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr, `error: ...`, with exit status 2 (no usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _bounds(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"in {low}..{high}"
    return f">= {low}" if low is not None else f"<= {high}"


def integer(low: int | None = 1, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number in low..high."""
    expected = f"an integer {_bounds(low, high)}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got '{text}'") from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    return parse


def number(low: float | None = None, high: float | None = None, *,
           above: float | None = None) -> Callable[[str], float]:
    """An argparse type: a finite number >= low (or > above) and <= high."""
    bounds = f"> {above:g}" + (f" and <= {high:g}" if high is not None else "") if above is not None else (
        _bounds(low, high) if low is not None or high is not None else "")
    expected = f"a finite number {bounds}".strip()

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got '{text}'") from None
        if (not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high)
                or (above is not None and value <= above)):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    return parse


seed = integer(0, MAX_SEED)


def check_seed(value: object, flag: str = "--seed") -> int:
    """`value` if it is an integer in 0..MAX_SEED, else a one-line ConfigError (for callers past argparse)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise ConfigError(f"{flag} {value}: expected an integer in 0..{MAX_SEED}")
    return value
