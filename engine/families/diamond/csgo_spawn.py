"""CS:GO spawn points: the frames and actions a DIAMOND CS:GO episode starts from.

The official ones sit beside the weights in the Hugging Face repo (`eloialonso/diamond`, `csgo/spawn/<dir>/`), one
folder per spawn point holding `low_res.npy` (SL, 3, h, w) uint8, `full_res.npy` (SL, 3, H, W) uint8, `act.npy`
(SL, 51) and `next_act.npy` (K, 51) multi-hot actions (`src/envs/world_model_env.py` of the csgo branch reads them).
The folder is found like the weights: `--prompt DIR`, a path in the world file, next to the world file, the
project's `checkpoints/<world>/`, the Hugging Face cache, then a download of the whole folder.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import snapshot_download
from omegaconf import DictConfig

from engine.checkpoints.download import DEFAULT_REVISION, hub_cli, hub_offline
from engine.checkpoints.resolve import is_user_path, local_checkpoint_dir
from engine.errors import ConfigError, display_path, first_line

SPAWN_FILES = ("low_res.npy", "full_res.npy", "act.npy", "next_act.npy")
SPAWN_PATTERN = "<dir>/{" + ",".join(name.removesuffix(".npy") for name in SPAWN_FILES) + "}.npy"


@dataclass(frozen=True)
class SpawnPoint:
    name: str
    low_res: torch.Tensor  # (SL, 3, h, w) uint8
    full_res: torch.Tensor  # (SL, 3, H, W) uint8
    act: torch.Tensor  # (SL, A) float32 0/1
    next_act: torch.Tensor  # (K, A) float32 0/1, the recorded continuation (replays)


def is_spawn_point(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in SPAWN_FILES)


def spawn_point_dirs(root: Path) -> list[Path]:
    """`root` itself when it is a spawn point, else its spawn-point subfolders in sorted order (the order the
    reference cycles through them on reset)."""
    if is_spawn_point(root):
        return [root]
    return sorted(path for path in root.iterdir() if is_spawn_point(path)) if root.is_dir() else []


def resolve_spawn_root(cfg: DictConfig, explicit: str | Path | None = None, project_root: Path | None = None,
                       allow_download: bool = True) -> Path:
    """The folder of spawn points of world `cfg` (`prompt.file`: a folder of `checkpoints.repo`, or a path)."""
    if explicit is not None:
        return _with_spawn_points(Path(explicit).expanduser(), "--prompt")
    entry = str((cfg.get("prompt") or {}).get("file") or "")
    if not entry:
        raise ConfigError(f"world '{cfg.name}' names no spawn folder (prompt.file): pass --prompt DIR")
    source_dir = Path(str(cfg.get("source_dir") or "."))
    if is_user_path(entry):
        path = Path(entry).expanduser()
        return _with_spawn_points(path if path.is_absolute() else source_dir / path, f"prompt.file of '{cfg.name}'")
    local_dir = local_checkpoint_dir(cfg, project_root)
    for path in (source_dir / entry, local_dir / entry):
        if spawn_point_dirs(path):
            return path
    repo = cfg.checkpoints.get("repo")
    revision = str(cfg.checkpoints.get("revision") or DEFAULT_REVISION)
    cached = hub_spawn_dir(repo, revision, entry, local_files_only=True) if repo else None
    if cached is not None:
        return cached
    reason = ("the world names no checkpoints.repo" if not repo else "downloads are off" if not allow_download
              else "offline: HF_HUB_OFFLINE is set" if hub_offline() else None)
    if reason is None:
        try:
            found = hub_spawn_dir(repo, revision, entry, local_files_only=False)
        except Exception as exc:  # the hub client's errors vary with huggingface_hub versions
            found, reason = None, f"download failed: {first_line(exc)}"
        if found is not None:
            return found
        reason = reason or f"repo {repo} has no spawn points under {entry}/"
    raise ConfigError(f"missing spawn points {entry}/{SPAWN_PATTERN} for world '{cfg.name}' ({reason}): "
                      + (f"download them with: {_download_command(repo, entry, local_dir, revision)} "
                         if repo else f"put them in {display_path(local_dir / entry)} ")
                      + "(or pass --prompt DIR)")


def hub_spawn_dir(repo: str, revision: str, entry: str, local_files_only: bool) -> Path | None:
    """`entry` of the repo snapshot (cache only, or downloaded) when it holds spawn points."""
    try:
        snapshot = snapshot_download(repo, revision=revision, allow_patterns=[f"{entry}/*"],
                                     local_files_only=local_files_only)
    except Exception:
        if local_files_only:
            return None
        raise
    path = Path(snapshot) / entry
    return path if spawn_point_dirs(path) else None


def _with_spawn_points(path: Path, what: str) -> Path:
    if not spawn_point_dirs(path):
        raise ConfigError(f"{what}: {path} holds no spawn points: expected {SPAWN_PATTERN} (one folder per spawn "
                          f"point) or the four files {', '.join(SPAWN_FILES)} themselves")
    return path


def load_spawn_point(path: Path, frames: int, low_size: tuple[int, int], factor: int, num_actions: int) -> SpawnPoint:
    """Read and check one spawn point: `frames` (SL) frames of `low_size` and `factor` x that, actions of width A."""
    missing = [name for name in SPAWN_FILES if not (path / name).is_file()]
    if missing:
        raise ConfigError(f"spawn point {path} lacks {', '.join(missing)}: expected {', '.join(SPAWN_FILES)}")
    h, w = low_size
    expected = {"low_res.npy": (frames, 3, h, w), "full_res.npy": (frames, 3, h * factor, w * factor),
                "act.npy": (frames, num_actions), "next_act.npy": (None, num_actions)}
    arrays = {}
    for name, shape in expected.items():
        try:
            array = np.load(path / name, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"spawn point file {path / name} is not a readable .npy array ({first_line(exc)})") \
                from None
        if array.ndim != len(shape) or any(want not in (None, got) for want, got in zip(shape, array.shape,
                                                                                           strict=True)):
            wanted = "(" + ", ".join("K" if n is None else str(n) for n in shape) + ")"
            raise ConfigError(f"spawn point file {path / name} has shape {array.shape}, expected {wanted}")
        if name.startswith(("low", "full")) and array.dtype != np.uint8:
            raise ConfigError(f"spawn point file {path / name} has dtype {array.dtype}, expected uint8")
        if name.endswith("act.npy") and not np.isin(array, (0, 1)).all():
            raise ConfigError(f"spawn point file {path / name} holds values other than 0 and 1 (multi-hot actions)")
        arrays[name] = torch.from_numpy(np.ascontiguousarray(array))
    return SpawnPoint(name=path.name, low_res=arrays["low_res.npy"], full_res=arrays["full_res.npy"],
                      act=arrays["act.npy"].float(), next_act=arrays["next_act.npy"].float())


def _download_command(repo: str, entry: str, local_dir: Path, revision: str) -> str:
    words = [hub_cli(), "download", repo, "--include", f"{entry}/*"]
    if revision != DEFAULT_REVISION:
        words += ["--revision", revision]
    return shlex.join([*words, "--local-dir", display_path(local_dir)])


