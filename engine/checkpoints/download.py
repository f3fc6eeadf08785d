"""Fetching checkpoint files from the Hugging Face hub into its cache, with its own progress bar.

huggingface_hub resumes a broken transfer with HTTP Range requests and reads `HF_ENDPOINT`,
`HF_HOME` and `HF_HUB_OFFLINE` when it is imported.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import shlex
import socket
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path

from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
from huggingface_hub.utils import (
    EntryNotFoundError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from engine.errors import CheckpointError, display_path, first_line

DEFAULT_REVISION = "main"


def hub_cli() -> str:
    """Name of the hub's command-line tool in the installed huggingface_hub (`hf` since 0.34)."""
    try:
        scripts = {entry.name for entry in importlib.metadata.distribution("huggingface_hub").entry_points}
    except importlib.metadata.PackageNotFoundError:
        scripts = set()
    return "hf" if "hf" in scripts else "huggingface-cli"


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on") \
        or bool(constants.HF_HUB_OFFLINE)


@functools.cache
def unreachable_endpoint(endpoint: str, timeout: float = 3.0) -> str | None:
    """Why the hub cannot be reached (its host does not resolve or accept a connection within `timeout`), or None.

    Asked once per process before any download, so an offline machine gets the one clear line at once instead
    of the hub client's retries (about 25 s and ten lines of noise)."""
    url = urllib.parse.urlsplit(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=timeout).close()
    except OSError as exc:
        return f"cannot reach {endpoint}: {exc.strerror or type(exc).__name__}"
    return None


def download_command(repo: str, filenames: Sequence[str], local_dir: Path,
                     revision: str = DEFAULT_REVISION) -> str:
    """The shell command that puts `filenames` of `repo` into `local_dir`."""
    words = [hub_cli(), "download", repo, *filenames]
    if revision != DEFAULT_REVISION:
        words += ["--revision", revision]
    words += ["--local-dir", display_path(local_dir)]
    return shlex.join(words)


def cached_file(repo: str, filename: str, revision: str = DEFAULT_REVISION) -> Path | None:
    """The file in the local Hugging Face cache, or None."""
    found = try_to_load_from_cache(repo, filename, revision=revision)
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def download_files(repo: str | None, wanted: Mapping[str, str], *, world: str, local_dir: Path,
                   revision: str = DEFAULT_REVISION, allow_download: bool = True) -> dict[str, Path]:
    """Download `wanted` ({role: filename in repo}) into the hub cache; returns {role: cached path}.

    When any file cannot be had, raises one CheckpointError naming every missing file, why, and
    the command that fetches them by hand.
    """
    reason = None
    if not repo:
        reason = "the world names no checkpoints.repo"
    elif not allow_download:
        reason = "downloads are off"
    elif hub_offline():
        reason = "offline: HF_HUB_OFFLINE is set"
    else:
        reason = unreachable_endpoint(constants.ENDPOINT)
    paths: dict[str, Path] = {}
    if reason is None:
        for role, filename in wanted.items():
            try:
                paths[role] = Path(hf_hub_download(repo, filename, revision=revision))
            except Exception as exc:  # the HTTP client's errors (requests or httpx) vary with huggingface_hub versions
                reason = _failure_reason(exc, repo, filename, revision)
                break
    if reason:
        raise missing_files_error(repo, [name for role, name in wanted.items() if role not in paths],
                                  [role for role in wanted if role not in paths], world=world,
                                  local_dir=local_dir, revision=revision, reason=reason)
    return paths


def missing_files_error(repo: str | None, filenames: Sequence[str], roles: Sequence[str], *, world: str,
                        local_dir: Path, revision: str = DEFAULT_REVISION, reason: str = "") -> CheckpointError:
    """One line: which files are missing, why, and how to get them."""
    overrides = " ".join(f"--weights {role}=PATH" for role in roles)
    filenames = list(dict.fromkeys(filenames))  # roles may share one file (DIAMOND's checkpoints)
    head = f"missing {', '.join(filenames)} for world '{world}'" + (f" ({reason})" if reason else "")
    if not repo:
        return CheckpointError(f"{head}: put them in {display_path(local_dir)} (or pass {overrides})")
    command = download_command(repo, filenames, local_dir, revision)
    return CheckpointError(f"{head}: download them with: {command} (or pass {overrides})")


def _failure_reason(exc: Exception, repo: str, filename: str, revision: str) -> str:
    if isinstance(exc, OfflineModeIsEnabled):
        return "offline: HF_HUB_OFFLINE is set"
    if isinstance(exc, RepositoryNotFoundError):
        return f"repo {repo} not found or not accessible; a gated or private repo needs HF_TOKEN"
    if isinstance(exc, RevisionNotFoundError):
        return f"repo {repo} has no revision '{revision}'"
    if isinstance(exc, LocalEntryNotFoundError):
        return f"cannot reach {constants.ENDPOINT}"
    if isinstance(exc, EntryNotFoundError):
        return f"repo {repo} has no file {filename} at revision '{revision}'"
    return f"download of {filename} failed: {first_line(exc)}"


