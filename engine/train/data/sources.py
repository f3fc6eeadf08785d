"""Find training episodes in folders: VPT `.jsonl` (+ `.mp4`) demos and the project's `.npz` recordings."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from engine.errors import ConfigError
from engine.train.data.episode import Episode
from engine.train.data.recordings import load_recording_episode
from engine.train.data.vpt import load_vpt_episode

EPISODE_SUFFIXES = (".jsonl", ".npz")


def _episode_files(path: Path) -> list[tuple[Path, str]]:
    """(file, name) pairs; names are paths relative to a searched folder, without suffix."""
    if path.is_file():
        if path.suffix.lower() not in EPISODE_SUFFIXES:
            raise ConfigError(f"training data {path}: expected a VPT .jsonl, a recording .npz or a folder")
        return [(path, path.stem)]
    if not path.is_dir():
        raise ConfigError(f"training data {path} does not exist")
    found = sorted(p for p in path.rglob("*") if p.suffix.lower() in EPISODE_SUFFIXES and p.is_file()
                   and not p.name.endswith(".tmp"))
    return [(p, p.relative_to(path).with_suffix("").as_posix()) for p in found]


def open_episode(path: str | Path, *, name: str | None = None, reference_compat: bool = False,
                 require_video: bool = False) -> Episode:
    """One episode from a VPT `.jsonl` or a recording `.npz`."""
    path = Path(path)
    if path.suffix.lower() == ".npz":
        episode = load_recording_episode(path)
    else:
        episode = load_vpt_episode(path, reference_compat=reference_compat)
        if require_video and episode.frames is None:
            raise ConfigError(f"VPT episode {path} has no video {path.with_suffix('.mp4').name} beside it")
    if name is not None:
        episode.name = name
    return episode


def find_episodes(paths: Sequence[str | Path] | str | Path, *, reference_compat: bool = False,
                  require_video: bool = False) -> list[Episode]:
    """Every episode under `paths` (folders are searched recursively), sorted by name.

    `reference_compat` selects WorldMAR's camera encoding for VPT actions (see `vpt`).
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files: dict[str, Path] = {}
    for root in paths:
        for file, name in _episode_files(Path(root)):
            if name in files:
                raise ConfigError(f"two training episodes are both named '{name}': {files[name]} and {file}")
            files[name] = file
    if not files:
        raise ConfigError(f"no training episodes (.jsonl or .npz) found in {', '.join(str(p) for p in paths)}")
    return [open_episode(files[name], name=name, reference_compat=reference_compat, require_video=require_video)
            for name in sorted(files)]
