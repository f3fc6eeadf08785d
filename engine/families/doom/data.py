"""Training items of the Doom world model, cut from recordings of the real game (engine/recordings npz).

Item for target frame t of an episode: the `context` frames before it (t-n .. t-1, the first frame repeated
before the start) with the actions that led into t-n+1 .. t (zeros before the start), and `memory` frames
recalled as the session recalls them in play: among the frames at least `recall.min_age` ticks old (every `stride`-th,
the newest `max_candidates`), the ones whose view overlaps frame t's the most (WorldMAR's FOV-overlap
retrieval, `engine.memory.retrieval`, on the recorded poses), with their poses relative to frame t. With
probability `memory_dropout` an item has no memory at all, so the model also plays before it has any.

With `depth` (a world model with a depth network), the recordings must carry the game's depth buffer and the item
holds frame t's depth (`target_depth`, map units) for the depth network's loss; with `reproject` too, each
recalled frame is redrawn from frame t's pose by its recorded depth (`reproject`), as the session redraws it by
its predicted depth in play, and `memory_drawn` says which of its pixels were drawn (for the blend network).
With `rollout` K > 0 the item also holds what an open-loop run of K ticks into frame t starts from: the
`rollout_context` frames t-K-n .. t-K-1 and the `rollout_actions` that led into t-K-n+1 .. t, so that the blend
network trains on the frames the dream makes from its own frames, as in play, not only from real ones.
`newest_poses` are the poses of frames t-K-1 .. t: each tick's newest context frame and then the frame it makes
(the blend network's redrawn newest frame, `blend_newest`).

Random draws come from a generator seeded by (seed, epoch, index), as every dataset of the trainer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from engine.errors import ConfigError
from engine.families.doom.network import action_window, memory_pose_features
from engine.families.doom.recall import Recall
from engine.families.doom.reproject import reproject_drawn
from engine.train.data.episode import Episode, to_model_frames


class DoomItems(Dataset):
    def __init__(self, episodes: Sequence[Episode], *, context: int, memory: int, recall: Recall,
                 pose_scale: float, memory_dropout: float = 0.2, stride: int = 2, max_candidates: int = 256,
                 depth: bool = False, reproject: bool = False, rollout: int = 0, seed: int = 0) -> None:
        self.episodes = [ep for ep in episodes if ep.num_frames > context + 1]
        self.with_depth, self.reproject = bool(depth or reproject), bool(reproject)
        if not self.episodes:
            raise ConfigError(f"DoomItems: no episode has more than {context + 1} frames ({len(episodes)} episodes)")
        for episode in self.episodes:
            episode.require_frames()
            if not torch.isfinite(episode.poses).all():
                raise ConfigError(f"episode {episode.source or episode.name} has frames without a pose: the Doom "
                                  "world model recalls frames by pose")
            if self.with_depth and (episode.depth is None or not episode.info.get("depth_units")):
                raise ConfigError(f"episode {episode.source or episode.name} has no 'depth' buffer with its "
                                  "depth_units: a world model with a depth network (depth_width > 0) learns depth "
                                  "from the game's; collect the data again (python -m engine.train.collect)")
        self.context, self.memory, self.recall = int(context), int(memory), recall
        self.pose_scale, self.memory_dropout = float(pose_scale), float(memory_dropout)
        self.stride, self.max_candidates = int(stride), int(max_candidates)
        self.rollout = int(rollout)
        if self.rollout < 0:
            raise ConfigError(f"DoomItems: rollout must be >= 0 ticks, got {rollout}")
        self.seed, self.epoch = int(seed), 0
        self._ends = np.cumsum([ep.num_frames - 1 for ep in self.episodes])

    def __len__(self) -> int:
        return int(self._ends[-1])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def locate(self, index: int) -> tuple[Episode, int]:
        """Flat index -> (episode, target frame t >= 1)."""
        number = int(np.searchsorted(self._ends, index, side="right"))
        first = int(self._ends[number - 1]) if number else 0
        return self.episodes[number], index - first + 1

    def memory_indices(self, episode: Episode, t: int) -> torch.Tensor:
        """Frame numbers recalled for target t (up to `memory`, best overlap first)."""
        newest = self.recall.newest_candidate(t, self.context)
        if newest < 0 or self.memory == 0:
            return torch.zeros(0, dtype=torch.int64)
        candidates = torch.arange(newest, -1, -self.stride)[: self.max_candidates].flip(0)
        picked = self.recall.pick(episode.poses[t], episode.poses[candidates], self.memory)
        return candidates[picked]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        episode, t = self.locate(index)
        state = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0]
        drop = np.random.default_rng(state).random() < self.memory_dropout
        n, m = self.context, self.memory
        context = [max(0, t - n + k) for k in range(n)]
        start = [max(0, t - self.rollout - n + k) for k in range(n)] if self.rollout else []
        recalled = torch.zeros(0, dtype=torch.int64) if drop else self.memory_indices(episode, t)
        frames = to_model_frames(episode.require_frames().read([*start, *context, *recalled.tolist(), t]))
        rollout_context, frames = frames[:len(start)], frames[len(start):]
        height, width = frames.shape[-2:]
        memory = torch.zeros((m, 3, height, width))
        memory[: len(recalled)] = frames[n:n + len(recalled)]
        valid = torch.arange(m) < len(recalled)
        memory_poses = torch.zeros((m, 5))
        memory_poses[: len(recalled)] = episode.poses[recalled]
        item = {"context": frames[:n].reshape(3 * n, height, width),
                "memory_pose": memory_pose_features(episode.poses[t], memory_poses, valid, self.pose_scale),
                "actions": action_window(episode.actions, t - n + 1, n), "target": frames[-1],
                "newest_poses": episode.poses[[max(0, t - self.rollout - 1 + k) for k in range(self.rollout + 2)]]}
        if self.rollout:
            item["rollout_context"] = rollout_context.reshape(3 * n, height, width)
            item["rollout_actions"] = action_window(episode.actions, t - self.rollout - n + 1, n + self.rollout)
        if self.with_depth:
            depth = self.depth(episode, [*recalled.tolist(), t] if self.reproject else [t])
            if self.reproject:
                drawn = torch.zeros((m, height, width))
                memory[: len(recalled)], reached = reproject_drawn(memory[: len(recalled)], depth[:-1],
                                                                   episode.poses[recalled], episode.poses[t])
                drawn[: len(recalled)] = reached[:, 0].float()
                item["memory_drawn"] = drawn
            item["target_depth"] = depth[-1]
        return item | {"memory": memory.reshape(3 * m, height, width)}

    @staticmethod
    def depth(episode: Episode, indices: list[int]) -> torch.Tensor:
        """(len(indices), H, W) float planar depth in map units from the recorded depth buffer."""
        levels = torch.from_numpy(episode.depth.read(indices)).float()
        return levels * float(episode.info["depth_units"])
