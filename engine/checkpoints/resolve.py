"""Finding a world's checkpoint files: the user's path, the world's folder, the project's
`checkpoints/<world>/`, the Hugging Face cache, then a download."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from omegaconf import DictConfig

from engine.checkpoints.download import DEFAULT_REVISION, cached_file, download_files
from engine.errors import CheckpointError

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def parse_weight_overrides(entries: Sequence[str]) -> dict[str, Path]:
    """`--weights ROLE=PATH` command-line entries -> {role: path}."""
    weights = {}
    for entry in entries:
        role, sep, path = entry.partition("=")
        if not sep or not role or not path:
            raise CheckpointError(f"--weights {entry}: expected ROLE=PATH, e.g. dit=./oasis500m.safetensors")
        weights[role] = Path(path)
    return weights


def is_user_path(entry: str) -> bool:
    """True for `./x`, `../x`, `~/x` and absolute paths: the user's own file, never looked up on the hub."""
    return Path(entry).is_absolute() or entry.startswith(("./", "../", "~", ".\\", "..\\"))


def local_checkpoint_dir(world_cfg: DictConfig, project_root: Path | None = None) -> Path:
    """`<project_root>/checkpoints/<world name>`, where hand-downloaded files go."""
    return (project_root or PROJECT_ROOT) / "checkpoints" / str(world_cfg.get("name", "world"))


def resolve_checkpoint_files(world_cfg: DictConfig, explicit: Mapping[str, str | Path] | None = None,
                             project_root: Path | None = None, allow_download: bool = True) -> dict[str, Path]:
    """A file for every role of `world_cfg.checkpoints.files`, downloading what is nowhere local.

    Order per role: `explicit[role]`; a user path in the config (relative to the world file's
    folder); for a repo file name: the world file's folder, `<project_root>/checkpoints/<world>/`,
    the Hugging Face cache, then the hub (when `allow_download`). A role listed in
    `checkpoints.unavailable` is never downloaded: when it is not found locally, its message is the error.
    """
    world = str(world_cfg.get("name", "world"))
    files = {str(role): str(entry) for role, entry in world_cfg.checkpoints.files.items()}
    explicit = dict(explicit or {})
    unknown = sorted(set(explicit) - set(files))
    if unknown:
        raise CheckpointError(f"world '{world}' has no checkpoint role {', '.join(unknown)}: "
                              f"its roles are {', '.join(files)}")
    source_dir = Path(str(world_cfg.get("source_dir") or "."))
    local_dir = local_checkpoint_dir(world_cfg, project_root)
    repo = world_cfg.checkpoints.get("repo")
    # Roles whose files cannot be downloaded (no public weights): the world's message says what to do.
    unavailable = {str(role): str(text) for role, text in (world_cfg.checkpoints.get("unavailable") or {}).items()}
    revision = str(world_cfg.checkpoints.get("revision") or DEFAULT_REVISION)

    resolved: dict[str, Path] = {}
    wanted: dict[str, str] = {}
    for role, entry in files.items():
        if role in explicit:
            resolved[role] = _existing(Path(explicit[role]).expanduser(), f"checkpoint given for '{role}'")
        elif is_user_path(entry):
            path = Path(entry).expanduser()
            resolved[role] = _existing(path if path.is_absolute() else source_dir / path,
                                       f"checkpoints.files.{role} of world '{world}'")
        else:
            found = next((p for p in (source_dir / entry, local_dir / entry) if p.is_file()), None)
            if found is None and role in unavailable:
                raise CheckpointError(f"missing {entry} for world '{world}': {unavailable[role]}")
            if found is None and repo:
                found = cached_file(str(repo), entry, revision)
            if found is None:
                wanted[role] = entry
            else:
                resolved[role] = found.absolute()
    if wanted:
        resolved |= download_files(str(repo) if repo else None, wanted, world=world, local_dir=local_dir,
                                   revision=revision, allow_download=allow_download)
    return {role: resolved[role] for role in files}


def _existing(path: Path, what: str) -> Path:
    if not path.is_file():
        raise CheckpointError(f"{what}: {path} does not exist")
    return path.absolute()
