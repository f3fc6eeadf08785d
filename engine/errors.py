"""User-facing errors: each carries one line that names the file or key and what was expected."""

from __future__ import annotations

import os
from pathlib import Path


class EngineError(Exception):
    """An error the launcher prints as a single line (no traceback)."""


class CheckpointError(EngineError):
    """Weights are missing, unreadable, or do not match the network they are loaded into."""


class ConfigError(EngineError):
    """A world config, keymap, prompt or action file is missing or malformed."""


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (its type name when it has none), for one-line errors."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def display_path(path: Path) -> str:
    """`path` relative to the working directory when it lies inside it, else absolute: how errors name files."""
    path = Path(path).absolute()
    return os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)
