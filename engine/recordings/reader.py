"""Reading a finished recording back: every array plus its metadata, checked against the format."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import ConfigError
from engine.recordings.format import RESERVED_KEYS, describe, with_suffix
from engine.recordings.recovery import unfinished


def read_recording(path: str | Path) -> dict[str, Any]:
    """Load a recording npz (or the npz beside an mp4/stem): every array plus `metadata` as a dict."""
    path = Path(path)
    if path.suffix.lower() == ".mp4":
        path = path.with_suffix(".npz")
    elif path.suffix.lower() != ".npz":
        path = with_suffix(path, ".npz")
    if not path.is_file():
        raise ConfigError(unfinished(path.with_suffix("")) or f"recording {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            out: dict[str, Any] = {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ConfigError(f"recording {path} is not a readable npz ({describe(exc)})") from None
    missing = [key for key in RESERVED_KEYS if key not in out]
    if missing:
        raise ConfigError(f"recording {path} lacks '{missing[0]}' (expected {', '.join(RESERVED_KEYS)})")
    try:
        out["metadata"] = json.loads(out["metadata"].item())
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"recording {path}: 'metadata' is not JSON ({exc})") from None
    expected = {"frames": (np.uint8, 4), "actions": (np.float32, 2), "poses": (np.float32, 2),
                "timestamps": (np.float64, 1)}
    count = len(out["frames"])
    for key, (dtype, ndim) in expected.items():
        value = out[key]
        if value.dtype != dtype or value.ndim != ndim or len(value) != count:
            raise ConfigError(f"recording {path}: '{key}' is {value.shape} {value.dtype}, expected {ndim}-D "
                              f"{np.dtype(dtype)} with {count} rows")
    return out
