"""The memory bank: a fixed number of generated frames (latent, pose, action, frame index) on the device.

Every buffer is allocated when the bank is made, so a tick only writes into existing memory and the
shapes never change. Until the bank is full a frame goes into the next free slot; after that it
replaces the stored frame whose view is the most redundant, so the bank keeps covering every place
and direction the player has seen instead of only the last `capacity` ticks:

* the *view distance* of two frames is `|Δposition| / position_scale + Δdirection / angle_scale`
  (blocks, degrees between the two viewing directions);
* each frame remembers its two nearest other frames (`nearest`, `nearest_slot`: distances and
  slots), kept up to date incrementally: a new frame is compared with all stored frames
  (O(capacity)), and frames that had the evicted frame among their two are marked `stale` and
  recomputed, stale ones first, `refresh_rows` per tick;
* the victim is the frame with the smallest sum of its two nearest distances, i.e. the one whose
  removal opens the smallest hole (a plain nearest-distance rule thins a uniformly sampled turn
  from one end instead of every other view); ties go to the oldest. One of the `keep_recent` newest
  frames or a stale one (its distances are not known yet) is never the victim.

Everything runs as tensor ops on the device with no host synchronisation; the host only counts
insertions. `save`/`load` store the whole state as safetensors (one file, metadata in its header).
"""

from __future__ import annotations

import json
import math
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from engine.errors import CheckpointError

FORMAT = "neural-game-engine/memory-bank"
VERSION = 1
POSE_DIM = 5
NEIGHBOURS = 2
EXTRA_PREFIX = "extra."
DIRECT = "donot_use_mm_for_euclid_dist"
STATE_KEYS = ("latents", "poses", "actions", "frame_index", "nearest", "nearest_slot", "stale")


@dataclass(frozen=True)
class BankSettings:
    """Eviction settings; see the module docstring."""

    keep_recent: int = 20
    position_scale: float = 2.0
    angle_scale: float = 15.0
    refresh_rows: int = 8


def view_directions(poses: torch.Tensor) -> torch.Tensor:
    """Unit viewing directions `(..., 3)` of Minecraft poses (yaw 0 = +z, positive pitch looks down)."""
    pitch, yaw = torch.deg2rad(poses[..., 3]), torch.deg2rad(poses[..., 4])
    return torch.stack([-torch.sin(yaw) * torch.cos(pitch), -torch.sin(pitch), torch.cos(yaw) * torch.cos(pitch)], -1)


def view_distance(a: torch.Tensor, b: torch.Tensor, settings: BankSettings) -> torch.Tensor:
    """`(n, m)` view distances between poses `a (n, 5)` and `b (m, 5)`."""
    # Direct differences: the matrix-product form of cdist loses close frames far from the origin.
    position = torch.cdist(a[:, :3], b[:, :3], compute_mode=DIRECT)
    chord = torch.cdist(view_directions(a), view_directions(b), compute_mode=DIRECT)
    angle = torch.rad2deg(2 * torch.asin(torch.clamp(chord / 2, max=1)))
    return position / settings.position_scale + angle / settings.angle_scale


class MemoryBank:
    """Fixed-capacity store of generated frames; see the module docstring."""

    def __init__(self, capacity: int, latent_shape: tuple[int, ...], action_dim: int,
                 device: torch.device | str = "cpu", latent_dtype: torch.dtype = torch.float32,
                 settings: BankSettings = BankSettings()) -> None:
        if capacity < 2 or not 0 <= settings.keep_recent < capacity:
            raise ValueError(f"memory bank needs capacity >= 2 and 0 <= keep_recent < capacity, "
                             f"got capacity {capacity}, keep_recent {settings.keep_recent}")
        self.capacity, self.settings = capacity, settings
        self.latent_shape, self.action_dim = tuple(latent_shape), action_dim
        self.device = torch.device(device)
        self.latents = torch.zeros((capacity, *latent_shape), dtype=latent_dtype, device=self.device)
        self.poses = torch.zeros((capacity, POSE_DIM), dtype=torch.float32, device=self.device)
        self.actions = torch.zeros((capacity, action_dim), dtype=torch.float32, device=self.device)
        self.frame_index = torch.full((capacity,), -1, dtype=torch.int64, device=self.device)
        self.nearest = torch.full((capacity, NEIGHBOURS), math.inf, dtype=torch.float32, device=self.device)
        self.nearest_slot = torch.full((capacity, NEIGHBOURS), -1, dtype=torch.int64, device=self.device)
        self.stale = torch.zeros(capacity, dtype=torch.bool, device=self.device)
        self._slot_ids = torch.arange(capacity, device=self.device)
        self.clear()

    def clear(self) -> None:
        """Forget every frame (the buffers stay allocated)."""
        self.size = 0
        self.inserted = 0
        self.frame_index.fill_(-1)
        self.nearest.fill_(math.inf)
        self.nearest_slot.fill_(-1)
        self.stale.zero_()
        self._recent: deque[int] = deque(maxlen=max(self.settings.keep_recent, 1))

    def __len__(self) -> int:
        return self.size

    @property
    def full(self) -> bool:
        return self.size == self.capacity

    def insert(self, latent: torch.Tensor, pose: torch.Tensor, action: torch.Tensor, frame_index: int) -> torch.Tensor:
        """Store one frame (frame indices must increase); returns its slot as a 0-d device tensor."""
        if self._recent and frame_index <= self._recent[-1]:
            raise ValueError(f"frame index {frame_index} is not newer than the last stored {self._recent[-1]}")
        full = self.full
        slot = self._victim() if full else self._slot_ids[self.size]
        if full:
            self.stale |= (self.nearest_slot == slot).any(1)
        else:
            self.size += 1
        index = slot.reshape(1)
        self.latents.index_copy_(0, index, latent.reshape(1, *self.latent_shape).to(self.latents))
        self.poses.index_copy_(0, index, pose.reshape(1, POSE_DIM).to(self.poses))
        self.actions.index_copy_(0, index, action.reshape(1, self.action_dim).to(self.actions))
        self.frame_index.index_fill_(0, index, frame_index)
        self._link(slot)
        self._refresh()
        self.inserted += 1
        self._recent.append(frame_index)
        return slot

    def _evictable(self) -> torch.Tensor:
        """Stored frames older than the `keep_recent` newest."""
        if not self.settings.keep_recent or not self._recent:
            return torch.ones(self.capacity, dtype=torch.bool, device=self.device)
        return self.frame_index < self._recent[0]

    def _victim(self) -> torch.Tensor:
        """The most redundant evictable frame (ties, or nothing but stale frames left: the oldest)."""
        evictable = self._evictable()
        score = torch.where(evictable & ~self.stale, self.nearest.sum(1), math.inf)
        tied = evictable & (score == score.min())
        return torch.argmin(torch.where(tied, self.frame_index, torch.iinfo(torch.int64).max))

    def _distances(self, rows: torch.Tensor) -> torch.Tensor:
        """`(len(rows), capacity)` view distances to every stored frame; inf to itself and empty slots."""
        d = view_distance(self.poses[rows], self.poses, self.settings)
        d[:, self.size:] = math.inf
        d[torch.arange(len(rows), device=self.device), rows] = math.inf
        return d

    def _link(self, slot: torch.Tensor) -> None:
        """Two-nearest bookkeeping after `slot` received a new frame."""
        index = slot.reshape(1)
        d = self._distances(index)
        closest = torch.topk(d, NEIGHBOURS, largest=False)
        self.nearest.index_copy_(0, index, closest.values)
        self.nearest_slot.index_copy_(0, index, torch.where(torch.isinf(closest.values), -1, closest.indices))
        self.stale.index_fill_(0, index, False)
        # Fresh rows take the new frame in where it is closer than one of their two (stale rows wait
        # for `_refresh`: one of their two is gone, so their third nearest is unknown).
        d = torch.where(self.stale, math.inf, d[0])
        n1, n2 = self.nearest.unbind(1)
        s1, s2 = self.nearest_slot.unbind(1)
        first, second = d < n1, (d >= n1) & (d < n2)
        self.nearest.copy_(torch.stack([torch.where(first, d, n1), torch.where(first, n1, torch.where(second, d, n2))], 1))
        self.nearest_slot.copy_(torch.stack([torch.where(first, slot, s1),
                                             torch.where(first, s1, torch.where(second, slot, s2))], 1))

    def _refresh(self) -> None:
        """Recompute the two nearest frames of up to `refresh_rows` frames, stale ones first."""
        rows = min(self.settings.refresh_rows, self.size)
        if rows == 0:
            return
        idx = torch.topk(self.stale[: self.size].float(), rows).indices
        closest = torch.topk(self._distances(idx), NEIGHBOURS, largest=False)
        self.nearest[idx] = closest.values
        self.nearest_slot[idx] = torch.where(torch.isinf(closest.values), -1, closest.indices)
        self.stale[idx] = False

    def ordered_slots(self) -> torch.Tensor:
        """`(size,)` slots of the stored frames, oldest first."""
        return torch.argsort(self.frame_index[: self.size])

    def candidates(self) -> torch.Tensor:
        """`(size,)` slots in WorldMAR's candidate layout: the newest frame (the previous frame of the
        next tick) first, then the others oldest to newest (the recency term favours later entries)."""
        order = self.ordered_slots()
        return torch.cat([order[-1:], order[:-1]])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {key: getattr(self, key)[: self.size] for key in STATE_KEYS}

    def save(self, path: str | Path, extra: dict[str, torch.Tensor] | None = None) -> None:
        """Write the stored frames and the bookkeeping to a safetensors file, with `extra` tensors of the
        caller (e.g. a session's pose) stored as `extra.<name>`."""
        tensors = {key: value.detach().cpu().contiguous() for key, value in self.state_dict().items()}
        tensors |= {f"{EXTRA_PREFIX}{name}": value.detach().cpu().contiguous() for name, value in (extra or {}).items()}
        metadata = {"format": FORMAT, "version": str(VERSION), "capacity": str(self.capacity),
                    "size": str(self.size), "inserted": str(self.inserted), "recent": json.dumps(list(self._recent)),
                    "settings": json.dumps(asdict(self.settings))}
        save_file(tensors, str(path), metadata=metadata)

    def load(self, path: str | Path) -> dict[str, torch.Tensor]:
        """Replace the contents with a file written by `save` (latent shape and action size must match);
        returns the file's extra tensors by name."""
        path = Path(path)
        try:
            with safe_open(str(path), "pt") as f:
                metadata = f.metadata() or {}
                tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"memory bank file {path} is not readable safetensors ({exc})") from None
        if metadata.get("format") != FORMAT:
            raise CheckpointError(f"memory bank file {path}: metadata 'format' is {metadata.get('format')!r}, "
                                  f"expected {FORMAT!r}")
        missing = [key for key in STATE_KEYS if key not in tensors]
        if missing:
            raise CheckpointError(f"memory bank file {path} lacks {', '.join(missing)}")
        size = tensors["frame_index"].shape[0]
        if size > self.capacity:
            raise CheckpointError(f"memory bank file {path} holds {size} frames; this bank has room for {self.capacity}")
        for key in STATE_KEYS:
            target = getattr(self, key)
            if tuple(tensors[key].shape) != (size, *target.shape[1:]):
                raise CheckpointError(f"memory bank file {path}: '{key}' has shape {tuple(tensors[key].shape)}, "
                                      f"expected {(size, *target.shape[1:])}")
        self.clear()
        for key in STATE_KEYS:
            getattr(self, key)[:size] = tensors[key].to(self.device, getattr(self, key).dtype)
        self.size = size
        self.inserted = int(metadata.get("inserted", size))
        self._recent.extend(json.loads(metadata.get("recent", "[]")))
        return {key.removeprefix(EXTRA_PREFIX): value for key, value in tensors.items() if key.startswith(EXTRA_PREFIX)}
