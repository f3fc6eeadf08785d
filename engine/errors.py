"""User-facing errors: each carries one line that names the file or key and what was expected."""


class EngineError(Exception):
    """An error the launcher prints as a single line (no traceback)."""


class CheckpointError(EngineError):
    """Weights are missing, unreadable, or do not match the network they are loaded into."""


class ConfigError(EngineError):
    """A world config, keymap, prompt or action file is missing or malformed."""
