"""Training items per family, cut from episodes: torch Datasets whose items are dicts of fixed-shape tensors.

* `EpisodeFrames`: single frames, for training a VAE.
* `OasisClips`: windows of consecutive frames with a noise level per frame (Diffusion Forcing, Chen et
  al. 2024: every frame of the window is noised independently).
* `DiamondSegments`: DIAMOND's segments (eloialonso/diamond `src/data/segment.py`, `batch_sampler.py`):
  n conditioning frames + the next frame, with actions, rewards, ends and the padding mask.
* `WorldMarItems`: WorldMAR's memory-frame sampling (nwrousell/world-mar `MinecraftDataset`): the target
  frame, the previous frame(s) and memory frames retrieved by view overlap with the target's pose.

Frames come from a `LatentCache` as VAE latents when one is given, else as pixels in [-1, 1] for the
trainer to encode. Random draws use a generator seeded from (seed, epoch, index), so an item is the same
in every worker and process and changes with `set_epoch`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset

from engine.errors import ConfigError
from engine.memory.pose import (
    DEFAULT_FOCAL_LENGTH,
    DEFAULT_IMAGE_HEIGHT,
    DEFAULT_IMAGE_WIDTH,
    camera_to_world,
    plucker,
    reference_camera_to_world,
)
from engine.memory.retrieval import generate_points_in_sphere, retrieve
from engine.train.data.episode import Episode, to_model_frames

if TYPE_CHECKING:
    from engine.train.data.latent_cache import LatentCache

OASIS_LATENT_SCALE = 0.07843137255  # open-oasis generate.py
POSTERIORS = ("mean", "sample")
MEMORY_DECAY = 0.005  # WorldMAR: memory shifts are drawn with weights exp(0.005 * shift)


class EpisodeItems(Dataset):
    """Shared plumbing: a flat index over per-episode item counts, seeded draws, latents or pixels."""

    def __init__(self, episodes: Sequence[Episode], counts: Sequence[int], cache: LatentCache | None,
                 posterior: str, frame_size: tuple[int, int] | None, seed: int) -> None:
        if posterior not in POSTERIORS:
            raise ConfigError(f"posterior must be one of {', '.join(POSTERIORS)}, got {posterior!r}")
        self.episodes = list(episodes)
        self.cache = cache
        self.posterior = posterior
        self.frame_size = None if frame_size is None else (int(frame_size[0]), int(frame_size[1]))
        self.seed = int(seed)
        self.epoch = 0
        self._ends = np.cumsum(np.asarray(counts, dtype=np.int64))
        for episode in self.episodes:
            if cache is not None and cache.num_frames(episode.name) != episode.num_frames:
                raise ConfigError(f"latent cache {cache.root}: episode '{episode.name}' has "
                                  f"{cache.num_frames(episode.name)} frames there, {episode.num_frames} in "
                                  f"{episode.source or 'the data'}")
            if cache is None:
                episode.require_frames()
        if len(self) == 0:
            raise ConfigError(f"{type(self).__name__}: no episode is long enough to cut one item "
                              f"({len(self.episodes)} episodes)")

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def locate(self, index: int) -> tuple[int, int]:
        """Flat index -> (episode number, item number inside that episode)."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        episode = int(np.searchsorted(self._ends, index, side="right"))
        first = int(self._ends[episode - 1]) if episode else 0
        return episode, index - first

    def generator(self, index: int) -> torch.Generator:
        state = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(2, np.uint32)
        return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))

    def latents(self, episode: Episode, indices: Sequence[int], generator: torch.Generator) -> torch.Tensor:
        """Unscaled VAE tokens (n, N, C): the posterior mean or one sample of it."""
        mean, logvar = self.cache.read(episode.name, indices)
        if self.posterior == "mean":
            return mean
        noise = torch.randn(mean.shape, generator=generator)
        return mean + torch.exp(0.5 * logvar) * noise

    def pixels(self, episode: Episode, indices: Sequence[int]) -> torch.Tensor:
        return to_model_frames(episode.require_frames().read(indices), self.frame_size)


class EpisodeFrames(EpisodeItems):
    """Every `stride`-th frame of every episode, in pixels: what a VAE trains on.

    Item: `frames` (3, H, W) float32 in [-1, 1]; `frame_index` () and `episode` () int64.
    """

    def __init__(self, episodes: Sequence[Episode], *, stride: int = 1, frame_size: tuple[int, int] | None = None,
                 seed: int = 0) -> None:
        if stride < 1:
            raise ConfigError(f"EpisodeFrames needs stride >= 1, got {stride}")
        self.stride = int(stride)
        counts = [-(-ep.num_frames // stride) for ep in episodes]
        super().__init__(episodes, counts, None, "mean", frame_size, seed)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        number, item = self.locate(index)
        frame = item * self.stride
        return {"frames": self.pixels(self.episodes[number], [frame])[0],
                "frame_index": torch.tensor(frame, dtype=torch.int64),
                "episode": torch.tensor(number, dtype=torch.int64)}


class OasisClips(EpisodeItems):
    """Every window of `num_frames` consecutive frames (start step `stride`) of every long-enough episode.

    Item: `latents` (T, C, h, w) float32 = posterior mean (or a sample) * latent_scale, laid out as
    `OasisSession.encode` does (cache given) or `frames` (T, 3, H, W) in [-1, 1]; `actions` (T, A)
    (actions[t] conditions frame t); `noise_levels` (T,) int64, independent uniform draws in
    [0, max_noise_level); `frame_indices` (T,) and `episode` () int64.
    """

    def __init__(self, episodes: Sequence[Episode], num_frames: int, *, cache: LatentCache | None = None,
                 latent_scale: float = OASIS_LATENT_SCALE, stride: int = 1, posterior: str = "mean",
                 max_noise_level: int = 1000, frame_size: tuple[int, int] | None = None, seed: int = 0) -> None:
        if num_frames < 1 or stride < 1 or max_noise_level < 1:
            raise ConfigError(f"OasisClips needs num_frames, stride and max_noise_level >= 1, got {num_frames}, "
                              f"{stride}, {max_noise_level}")
        self.num_frames = int(num_frames)
        self.stride = int(stride)
        self.latent_scale = float(latent_scale)
        self.max_noise_level = int(max_noise_level)
        counts = [max(0, (ep.num_frames - num_frames) // stride + 1) for ep in episodes]
        super().__init__(episodes, counts, cache, posterior, frame_size, seed)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        number, window = self.locate(index)
        episode = self.episodes[number]
        start = window * self.stride
        indices = torch.arange(start, start + self.num_frames)
        generator = self.generator(index)
        item = {"actions": episode.actions[indices].clone(), "frame_indices": indices,
                "episode": torch.tensor(number, dtype=torch.int64)}
        if self.cache is not None:
            tokens = self.latents(episode, indices.tolist(), generator) * self.latent_scale
            rows, cols = self.cache.grid
            item["latents"] = tokens.transpose(1, 2).reshape(self.num_frames, -1, rows, cols).contiguous()
        else:
            item["frames"] = self.pixels(episode, indices.tolist())
        item["noise_levels"] = torch.randint(0, self.max_noise_level, (self.num_frames,), generator=generator)
        return item


class DiamondSegments(EpisodeItems):
    """DIAMOND segments of `seq_length` steps in pixel space.

    Without `pad_beyond_end` (denoiser: seq_length = conditioning frames + 1) an episode of T frames gives
    T segments, one per stop in 1..T, padded before the start where needed; with it (reward/end model)
    T + seq_length - 1 segments, one per start in -seq_length+1..T-1, padded on either side.

    Item: `obs` (T, 3, H, W) float32 in [-1, 1] (zeros where padded); `act` (T,) int64 with
    `discrete_actions` (argmax of one-hot rows, or a single action-id column) else (T, A) float32;
    `rew` (T,) float32; `end`, `trunc` (T,) uint8; `mask_padding` (T,) bool; `segment` (3,) int64 =
    (episode, start, stop). DIAMOND's convention: act[t] is the action taken at obs[t] and rew[t], end[t]
    belong to that transition, i.e. the episode's actions/rewards/ends of frame t + 1; the episode's last
    frame has none (zeros, and trunc = 1 unless the episode ended there).
    """

    def __init__(self, episodes: Sequence[Episode], seq_length: int, *, frame_size: tuple[int, int] | None = None,
                 discrete_actions: bool = False, pad_beyond_end: bool = False) -> None:
        if seq_length < 1:
            raise ConfigError(f"DiamondSegments needs seq_length >= 1, got {seq_length}")
        self.seq_length = int(seq_length)
        self.discrete_actions = bool(discrete_actions)
        self.pad_beyond_end = bool(pad_beyond_end)
        counts = [ep.num_frames + (seq_length - 1 if pad_beyond_end else 0) for ep in episodes]
        super().__init__(episodes, counts, None, "mean", frame_size, 0)
        self.transitions = [self._transitions(episode) for episode in self.episodes]

    def _transitions(self, episode: Episode) -> dict[str, torch.Tensor]:
        """Per-frame DIAMOND arrays (T rows) of one episode."""
        count = episode.num_frames
        actions = episode.actions
        if self.discrete_actions:
            actions = actions[:, 0].round() if actions.shape[1] == 1 else actions.argmax(dim=1)
            actions = actions.to(torch.int64)
        act = torch.zeros_like(actions)
        act[:-1] = actions[1:]
        rew = torch.zeros(count, dtype=torch.float32)
        rew[:-1] = episode.rewards[1:]
        end = torch.zeros(count, dtype=torch.uint8)
        end[:-1] = episode.ends[1:].to(torch.uint8)
        trunc = torch.zeros(count, dtype=torch.uint8)
        trunc[-1] = 0 if bool(episode.ends[-1]) else 1
        return {"act": act, "rew": rew, "end": end, "trunc": trunc}

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        number, offset = self.locate(index)
        episode = self.episodes[number]
        start = offset - self.seq_length + 1
        stop = start + self.seq_length
        first, last = max(0, start), min(episode.num_frames, stop)
        real = slice(first - start, last - start)
        frames = self.pixels(episode, range(first, last))
        obs = frames.new_zeros((self.seq_length, *frames.shape[1:]))
        obs[real] = frames
        item: dict[str, torch.Tensor] = {"obs": obs}
        for key, values in self.transitions[number].items():
            padded = values.new_zeros((self.seq_length, *values.shape[1:]))
            padded[real] = values[first:last]
            item[key] = padded
        mask = torch.zeros(self.seq_length, dtype=torch.bool)
        mask[real] = True
        item["mask_padding"] = mask
        item["segment"] = torch.tensor([number, start, stop], dtype=torch.int64)
        return item


def memory_shifts(memory_size: int, memory_distance: int, prev_distance: int) -> torch.Tensor:
    """WorldMAR's fixed memory-frame offsets (memory_size,) int64, oldest first.

    Offsets lie in [-prev_distance - memory_distance, -prev_distance), weighted by exp(0.005 * s) and
    picked by inverting the CDF at memory_size evenly spaced quantiles (float32, as the reference).
    """
    valid = torch.arange(-prev_distance - memory_distance, -prev_distance, dtype=torch.float32)
    weights = torch.exp(MEMORY_DECAY * valid)
    weights = weights / weights.sum()
    cdf = torch.cumsum(weights, dim=0)
    quantiles = torch.linspace(1 / (2 * memory_size), 1 - 1 / (2 * memory_size), memory_size)
    picks = torch.searchsorted(cdf, quantiles)
    return valid[picks].to(torch.int64)


def prev_shifts(prev_distance: int, num_prev_frames: int, generator: torch.Generator) -> torch.Tensor:
    """`num_prev_frames` distinct offsets from -prev_distance..-1, weights rising linearly towards -1."""
    valid = torch.arange(-prev_distance, 0, dtype=torch.float32)
    weights = (prev_distance + 1) + valid
    picks = torch.multinomial(weights / weights.sum(), num_prev_frames, replacement=False, generator=generator)
    return valid[picks].to(torch.int64)


class WorldMarItems(EpisodeItems):
    """WorldMAR training items: the target frame, then its context frames newest first, then padding.

    Item `frame_idx` of an episode (1..T-1) draws `num_prev_frames` previous frames and adds the fixed
    memory offsets (`memory_shifts`), drops negative frames and GUI frames (except frame_idx - 1), and
    keeps what `retrieve` picks (first the previous frames, then the memory frames that best cover the
    target's view; `min_overlap` 0, k = num_mem_frames + num_prev_frames). T = 1 + k.

    Item: `latents` (T, N, C) float32 unscaled VAE tokens (posterior sample by default, as WorldMAR
    precomputed them) or `frames` (T, 3, H, W) in [-1, 1] without a cache; `plucker` (T, 9, 16, 6) at the
    rays the model reads, relative to the target; `action` (25,) = actions[frame_idx]; `timestamps` (T,)
    int64 = frame_indices - frame_idx; `num_non_padding_frames` () int64; `frame_indices` (T,) int64 (-1
    padding); `episode` () int64. Padding frames are zeros everywhere.

    The Plücker intrinsics default to the reference's (focal 0.35 of a 640x320 image, fx != fy).
    `reference_compat=True` feeds the reference's constant Plücker map: its dataloader takes every relative
    pose against the frame itself, so all are the identity (fixture quirk P1). The default is relative to
    the target frame, as the model's pose embedding intends.
    """

    def __init__(self, episodes: Sequence[Episode], cache: LatentCache | None = None, *, memory_size: int = 100,
                 memory_distance: int = 1000, prev_distance: int = 1, num_mem_frames: int = 2,
                 num_prev_frames: int = 1, reference_compat: bool = False, points: torch.Tensor | None = None,
                 num_points: int = 10_000, point_radius: float = 30.0, posterior: str = "sample",
                 frame_size: tuple[int, int] | None = None, focal_length: float = DEFAULT_FOCAL_LENGTH,
                 image_width: int = DEFAULT_IMAGE_WIDTH, image_height: int = DEFAULT_IMAGE_HEIGHT,
                 seed: int = 0) -> None:
        if not 1 <= num_prev_frames <= prev_distance:
            raise ConfigError(f"WorldMarItems needs 1 <= num_prev_frames <= prev_distance, got {num_prev_frames} "
                              f"and {prev_distance}")
        if memory_size < 1 or memory_distance < 1 or num_mem_frames < 0:
            raise ConfigError(f"WorldMarItems needs memory_size, memory_distance >= 1 and num_mem_frames >= 0, got "
                              f"{memory_size}, {memory_distance}, {num_mem_frames}")
        for episode in episodes:
            if not torch.isfinite(episode.poses).all():
                raise ConfigError(f"episode {episode.source or episode.name} has frames without a pose "
                                  "(xpos, ypos, zpos, pitch, yaw): WorldMAR needs one for every frame")
        self.prev_distance = int(prev_distance)
        self.num_prev_frames = int(num_prev_frames)
        self.num_context_frames = int(num_prev_frames + num_mem_frames)
        self.reference_compat = bool(reference_compat)
        self.intrinsics = {"focal_length": float(focal_length), "image_width": int(image_width),
                           "image_height": int(image_height)}
        self.memory_offsets = memory_shifts(memory_size, memory_distance, prev_distance)
        if points is None:
            points = generate_points_in_sphere(num_points, point_radius, torch.Generator().manual_seed(seed))
        self.points = points.to(torch.float32)
        counts = [max(0, ep.num_frames - 1) for ep in episodes]
        super().__init__(episodes, counts, cache, posterior, frame_size, seed)

    @property
    def num_frames(self) -> int:
        return 1 + self.num_context_frames

    def context(self, episode: Episode, frame_idx: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(candidates after filtering, chosen context frames newest first) for target `frame_idx`."""
        shifts = torch.cat([prev_shifts(self.prev_distance, self.num_prev_frames, generator), self.memory_offsets])
        candidates = frame_idx + shifts
        candidates = candidates[candidates >= 0]
        candidates = candidates[(candidates == frame_idx - 1) | ~episode.gui_open[candidates]]
        if len(candidates) == 0:
            return candidates, candidates
        picked = retrieve(episode.poses[frame_idx], episode.poses[candidates], self.points,
                          num_prev_frames=min(self.num_prev_frames, len(candidates)), min_overlap=0.0,
                          k=self.num_context_frames).indices
        return candidates, candidates[picked[:len(candidates)]].sort(descending=True).values

    def plucker(self, poses: torch.Tensor) -> torch.Tensor:
        """(n, 9, 16, 6) Plücker maps of frames with `poses` (n, 5), relative to the first."""
        if self.reference_compat:
            return plucker(reference_camera_to_world(poses), 0, token_grid=True, **self.intrinsics)[0]
        return plucker(camera_to_world(poses)[:, None], 0, token_grid=True, **self.intrinsics)[:, 0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        number, offset = self.locate(index)
        episode = self.episodes[number]
        frame_idx = offset + 1
        generator = self.generator(index)
        _, context = self.context(episode, frame_idx, generator)
        real = torch.cat([torch.tensor([frame_idx]), context])
        count, total = len(real), self.num_frames
        frame_indices = torch.full((total,), -1, dtype=torch.int64)
        frame_indices[:count] = real
        rays = self.plucker(episode.poses[real])
        item = {"plucker": torch.cat([rays, rays.new_zeros((total - count, *rays.shape[1:]))])}
        if self.cache is not None:
            values = self.latents(episode, real.tolist(), generator)
            item["latents"] = torch.cat([values, values.new_zeros((total - count, *values.shape[1:]))])
        else:
            values = self.pixels(episode, real.tolist())
            item["frames"] = torch.cat([values, values.new_zeros((total - count, *values.shape[1:]))])
        item |= {"action": episode.actions[frame_idx].clone(), "timestamps": frame_indices - frame_idx,
                 "num_non_padding_frames": torch.tensor(count, dtype=torch.int64), "frame_indices": frame_indices,
                 "episode": torch.tensor(number, dtype=torch.int64)}
        return item
