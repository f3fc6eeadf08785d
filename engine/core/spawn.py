"""Finding a world's prompt (spawn) frames: explicit path, next to the world file, the local
checkpoint folder, or the URL the world config names (downloaded once with a progress bar)."""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from pathlib import Path

from omegaconf import DictConfig
from tqdm import tqdm

from engine.checkpoints.download import hub_offline
from engine.checkpoints.resolve import local_checkpoint_dir
from engine.errors import ConfigError


def resolve_prompt_file(cfg: DictConfig, explicit: str | Path | None = None, project_root: Path | None = None,
                        allow_download: bool = True) -> Path:
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"prompt {path} does not exist: expected an image or a video file")
        return path
    prompt = cfg.get("prompt") or {}
    name = prompt.get("file")
    if not name:
        raise ConfigError(f"world '{cfg.name}' names no prompt file: pass --prompt image.png|video.mp4")
    candidates = [Path(cfg.get("source_dir", ".")) / name, local_checkpoint_dir(cfg, project_root) / name]
    for path in candidates:
        if path.is_file():
            return path
    url = prompt.get("url")
    if not url or not allow_download or hub_offline():
        raise ConfigError(f"prompt frame {name} for world '{cfg.name}' is missing: put it at {candidates[-1]}"
                          + (f" (download {url})" if url else "") + " or pass --prompt image.png|video.mp4")
    return download_file(url, candidates[-1])


def download_file(url: str, target: Path) -> Path:
    """Download `url` to `target` with a progress bar; a partial file never takes the final name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=target.name) as bar:
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError) as exc:
        partial.unlink(missing_ok=True)
        raise ConfigError(f"could not download {url} to {target} ({exc}): "
                          "download it by hand or pass --prompt image.png|video.mp4") from None
    shutil.move(partial, target)
    return target
