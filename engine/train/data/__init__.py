"""Training data: episodes (VPT mp4 + jsonl, the project's npz recordings), the VAE latent cache, and the
per-family items (Oasis clips, DIAMOND segments, WorldMAR memory items).

The latent-cache names are imported on first use, so `python -m engine.train.data.latent_cache` runs
its module without importing it twice.
"""

from __future__ import annotations

import importlib
from typing import Any

from engine.train.data.episode import ArrayFrames, Episode, FrameSource, to_model_frames
from engine.train.data.recordings import load_recording_episode
from engine.train.data.sampling import (
    DiamondSegments,
    EpisodeFrames,
    EpisodeItems,
    OasisClips,
    WorldMarItems,
    memory_shifts,
    prev_shifts,
)
from engine.train.data.sources import find_episodes, open_episode
from engine.train.data.vpt import VideoFrames, load_vpt_episode, read_vpt_jsonl, vpt_action_matrix, vpt_poses

_LATENT_CACHE_NAMES = ("LatentCache", "LatentCacheWriter", "build_latent_cache", "vae_description")

__all__ = [
    "ArrayFrames", "DiamondSegments", "Episode", "EpisodeFrames", "EpisodeItems", "FrameSource", "LatentCache",
    "LatentCacheWriter", "OasisClips", "VideoFrames", "WorldMarItems", "build_latent_cache", "find_episodes",
    "load_recording_episode", "load_vpt_episode", "memory_shifts", "open_episode", "prev_shifts", "read_vpt_jsonl",
    "to_model_frames", "vae_description", "vpt_action_matrix", "vpt_poses",
]


def __getattr__(name: str) -> Any:
    if name in _LATENT_CACHE_NAMES:
        return getattr(importlib.import_module("engine.train.data.latent_cache"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
