"""Latent cache: every frame encoded once by the VAE, stored as sharded safetensors with a JSON index.

WorldMAR precomputes its training latents the same way (one file per frame there). Here a shard holds
up to `shard_frames` consecutive frames of one episode, tensors `mean` and `logvar`, each (n, N, C) in
the VAE's token layout (N = h*w, row-major), **unscaled**: datasets apply a family's latent scale and
layout. `index.json` records the VAE (checkpoint sha256, latent size, grid, image size), the stored
dtype and, per episode, its frame count and shards; it is rewritten atomically after every shard, so
an interrupted build resumes where it stopped.

    python -m engine.train.data.latent_cache --world minecraft --data data/vpt --out cache/minecraft
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from engine.errors import ConfigError, EngineError
from engine.train.data.episode import Episode, to_model_frames

FORMAT_NAME = "neural-game-engine/latent-cache"
FORMAT_VERSION = 1
INDEX_NAME = "index.json"
SHARD_DIR = "shards"
STORE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _dtype_name(dtype: torch.dtype) -> str:
    return next(name for name, value in STORE_DTYPES.items() if value == dtype)


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def vae_description(vae: torch.nn.Module, sha256: str | None = None) -> dict[str, Any]:
    """What a cache must agree on with the VAE that extends it."""
    return {"sha256": sha256, "latent_dim": int(vae.latent_dim), "grid": list(vae.grid),
            "image_size": list(vae.image_size)}


class LatentCache:
    """Read access to a built cache; picklable (file handles are reopened in each DataLoader worker)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        path = self.root / INDEX_NAME
        if not path.is_file():
            raise ConfigError(f"latent cache {self.root} has no {INDEX_NAME} (build it with "
                              "python -m engine.train.data.latent_cache)")
        try:
            self.index = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"latent cache index {path} is not readable JSON ({exc})") from None
        if self.index.get("format") != FORMAT_NAME or self.index.get("version") != FORMAT_VERSION:
            raise ConfigError(f"latent cache index {path}: expected format {FORMAT_NAME} version {FORMAT_VERSION}")
        vae = self.index["vae"]
        self.latent_dim = int(vae["latent_dim"])
        self.grid = (int(vae["grid"][0]), int(vae["grid"][1]))
        self.image_size = (int(vae["image_size"][0]), int(vae["image_size"][1]))
        self._handles: dict[str, Any] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handles": {}}

    @property
    def episodes(self) -> list[str]:
        return [name for name in self.index["episodes"] if self.has(name)]

    def has(self, name: str) -> bool:
        entry = self.index["episodes"].get(name)
        return entry is not None and _covered(entry) == entry["num_frames"]

    def num_frames(self, name: str) -> int:
        if not self.has(name):
            raise ConfigError(f"latent cache {self.root} has no complete entry for episode '{name}' "
                              "(build or resume the cache with its episodes)")
        return int(self.index["episodes"][name]["num_frames"])

    def _handle(self, file: str) -> Any:
        if file not in self._handles:
            path = self.root / file
            try:
                self._handles[file] = safe_open(str(path), framework="pt")
            except Exception as exc:
                raise ConfigError(f"latent cache shard {path} is not readable ({exc})") from None
        return self._handles[file]

    def read(self, name: str, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, logvar) float32 (n, N, C) of frames `indices` of episode `name`, in that order."""
        count = self.num_frames(name)
        shards = self.index["episodes"][name]["shards"]
        tokens = self.grid[0] * self.grid[1]
        mean = torch.empty((len(indices), tokens, self.latent_dim), dtype=torch.float32)
        logvar = torch.empty_like(mean)
        for out_row, frame in enumerate(int(i) for i in indices):
            if not 0 <= frame < count:
                raise ConfigError(f"latent cache: episode '{name}' has frames 0..{count - 1}, asked for {frame}")
            file, start, _ = next(s for s in shards if s[1] <= frame < s[2])
            handle = self._handle(file)
            mean[out_row] = handle.get_slice("mean")[frame - start]
            logvar[out_row] = handle.get_slice("logvar")[frame - start]
        return mean, logvar


def _covered(entry: dict) -> int:
    return entry["shards"][-1][2] if entry["shards"] else 0


class LatentCacheWriter:
    """Appends episodes' latents to a cache folder; shards are written as they fill, the index after each.

    `description` is `vae_description(...)` of the encoder; an existing cache is resumed only when it
    agrees with it (sha256 compared when both are known) and with `store_dtype`.
    """

    def __init__(self, out_dir: str | Path, description: dict[str, Any], *, store_dtype: torch.dtype = torch.float32,
                 shard_frames: int = 512) -> None:
        if shard_frames < 1:
            raise ConfigError(f"latent cache: shard_frames must be >= 1, got {shard_frames}")
        self.out = Path(out_dir)
        (self.out / SHARD_DIR).mkdir(parents=True, exist_ok=True)
        self.store_dtype = store_dtype
        if (self.out / INDEX_NAME).is_file():
            self.index = LatentCache(self.out).index
            self._check_compatible(description)
        else:
            self.index = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "vae": description,
                          "dtype": _dtype_name(store_dtype), "shard_frames": shard_frames, "next_shard": 0,
                          "episodes": {}}
        self.shard_frames = int(self.index["shard_frames"])
        self._pending: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}

    def _check_compatible(self, description: dict[str, Any]) -> None:
        stored = self.index["vae"]
        same_sha = None in (stored.get("sha256"), description["sha256"]) or stored["sha256"] == description["sha256"]
        same_shape = all(stored.get(key) == description[key] for key in ("latent_dim", "grid", "image_size"))
        if not (same_sha and same_shape) or self.index["dtype"] != _dtype_name(self.store_dtype):
            raise ConfigError(f"latent cache {self.out} was built with another VAE or dtype ({stored}, "
                              f"{self.index['dtype']}); use a new output folder")

    def begin(self, name: str, num_frames: int, source: str = "") -> int:
        """Register an episode; returns how many of its frames are already stored (where to resume)."""
        entry = self.index["episodes"].setdefault(name, {"num_frames": num_frames, "source": source, "shards": []})
        if entry["num_frames"] != num_frames:
            raise ConfigError(f"latent cache {self.out}: episode '{name}' had {entry['num_frames']} frames when it "
                              f"was cached, now {num_frames}; use a new output folder")
        self._pending[name] = ([], [])
        return _covered(entry)

    def save_index(self) -> None:
        _write_json_atomic(self.out / INDEX_NAME, self.index)

    def append(self, name: str, mean: torch.Tensor, logvar: torch.Tensor) -> None:
        """Latents (n, N, C) of the episode's next n frames (after those already stored or appended)."""
        entry = self.index["episodes"][name]
        means, logvars = self._pending[name]
        means.append(mean.detach().to("cpu", self.store_dtype))
        logvars.append(logvar.detach().to("cpu", self.store_dtype))
        pending = sum(len(m) for m in means)
        if _covered(entry) + pending > entry["num_frames"]:
            raise ConfigError(f"latent cache: episode '{name}' has {entry['num_frames']} frames, "
                              f"{_covered(entry) + pending} were appended")
        if pending >= self.shard_frames or _covered(entry) + pending == entry["num_frames"]:
            self._flush(entry, means, logvars)

    def _flush(self, entry: dict, means: list[torch.Tensor], logvars: list[torch.Tensor]) -> None:
        """Write full shards (and the final partial one at the episode's end); record each in the index."""
        mean, logvar = torch.cat(means), torch.cat(logvars)
        means.clear()
        logvars.clear()
        start = _covered(entry)
        while len(mean) and (len(mean) >= self.shard_frames or start + len(mean) == entry["num_frames"]):
            n = min(self.shard_frames, len(mean))
            file = f"{SHARD_DIR}/{self.index['next_shard']:06d}.safetensors"
            tmp = self.out / (file + ".tmp")
            save_file({"mean": mean[:n].contiguous(), "logvar": logvar[:n].contiguous()}, str(tmp),
                      metadata={"start": str(start), "stop": str(start + n)})
            os.replace(tmp, self.out / file)
            entry["shards"].append([file, start, start + n])
            self.index["next_shard"] += 1
            self.save_index()
            mean, logvar, start = mean[n:], logvar[n:], start + n
        if len(mean):
            means.append(mean)
            logvars.append(logvar)


@torch.no_grad()
def _encode(vae: torch.nn.Module, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return vae.encode(frames.to(vae.device, vae.dtype))


def build_latent_cache(episodes: Sequence[Episode], vae: torch.nn.Module, out_dir: str | Path, *,
                       batch_size: int = 16, shard_frames: int = 512, store_dtype: torch.dtype = torch.float32,
                       vae_sha256: str | None = None, progress: bool = True) -> LatentCache:
    """Encode every frame of `episodes` with `vae` (an OasisVAE on its device and dtype) into `out_dir`.

    Frames are resized to the VAE's input size, mapped to [-1, 1] and encoded; the posterior mean and
    log-variance are stored. Frames already in the index are skipped, so a rerun resumes.
    """
    if batch_size < 1:
        raise ConfigError(f"latent cache: batch_size must be >= 1, got {batch_size}")
    writer = LatentCacheWriter(out_dir, vae_description(vae, vae_sha256), store_dtype=store_dtype,
                               shard_frames=shard_frames)
    starts = [writer.begin(ep.name, ep.num_frames, ep.source) for ep in episodes]
    writer.save_index()
    total = sum(ep.num_frames for ep in episodes)
    with tqdm(total=total, initial=sum(starts), unit="frame", desc="encoding latents", disable=not progress) as bar:
        for episode, start in zip(episodes, starts, strict=True):
            if start == episode.num_frames:
                continue
            for chunk in episode.require_frames().iter_chunks(start, episode.num_frames, batch_size):
                mean, logvar = _encode(vae, to_model_frames(chunk, vae.image_size))
                writer.append(episode.name, mean, logvar)
                bar.update(len(chunk))
    return LatentCache(out_dir)


def load_vae(world: str, role: str = "vae", *, weights: Sequence[str] = (), overrides: Sequence[str] = (),
             device: str = "auto", dtype: str | None = None, allow_download: bool = True
             ) -> tuple[torch.nn.Module, str]:
    """A world's VAE role only (the other networks are neither resolved nor downloaded) and its sha256."""
    from engine.backends.device import resolve_device, resolve_dtype
    from engine.checkpoints.loading import load_into
    from engine.checkpoints.resolve import parse_weight_overrides, resolve_checkpoint_files
    from engine.checkpoints.verify import file_sha256
    from engine.core.config import load_world_config
    from engine.core.networks import checkpoint_prefix, network_classes, network_kwargs

    cfg = load_world_config(world, overrides)
    if role not in cfg.checkpoints.files:
        raise ConfigError(f"world '{cfg.name}' has no checkpoint role '{role}' "
                          f"(roles: {', '.join(cfg.checkpoints.files)})")
    only = copy.deepcopy(cfg)
    only.checkpoints.files = {role: cfg.checkpoints.files[role]}
    explicit = {k: v for k, v in parse_weight_overrides(weights).items() if k == role}
    file = resolve_checkpoint_files(only, explicit=explicit, allow_download=allow_download)[role]
    dev = resolve_device(device)
    with torch.device("meta"):
        vae = network_classes(cfg)[role](**network_kwargs(cfg, role))
    vae.to_empty(device=dev)
    load_into(vae, file, prefix=checkpoint_prefix(cfg, role))
    return vae.to(resolve_dtype(dtype, dev)).eval().requires_grad_(False), file_sha256(file)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine.train.data.latent_cache",
                                     description="Encode training episodes once with a world's VAE (resumable).")
    parser.add_argument("--world", required=True, help="world name or yaml whose VAE encodes the frames")
    parser.add_argument("--data", nargs="+", required=True, help="folders or files: VPT .jsonl+.mp4, recording .npz")
    parser.add_argument("--out", required=True, help="cache folder (created; an existing cache is resumed)")
    parser.add_argument("--role", default="vae", help="checkpoint role of the VAE in the world config")
    parser.add_argument("--weights", action="append", default=[], metavar="ROLE=PATH")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="world config override")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default=None, help="VAE compute precision: fp32, bf16, fp16")
    parser.add_argument("--store-dtype", default="float32", choices=sorted(STORE_DTYPES))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--shard-frames", type=int, default=512)
    parser.add_argument("--offline", action="store_true", help="never download the VAE checkpoint")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from engine.train.data.sources import find_episodes

    try:
        episodes = find_episodes(args.data, require_video=True)
        vae, sha = load_vae(args.world, args.role, weights=args.weights, overrides=args.set, device=args.device,
                            dtype=args.dtype, allow_download=not args.offline)
        cache = build_latent_cache(episodes, vae, args.out, batch_size=args.batch_size,
                                   shard_frames=args.shard_frames, store_dtype=STORE_DTYPES[args.store_dtype],
                                   vae_sha256=sha)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    frames = sum(cache.num_frames(name) for name in cache.episodes)
    print(f"latent cache {cache.root}: {len(cache.episodes)} episodes, {frames} frames")
    return 0


if __name__ == "__main__":
    sys.exit(main())
