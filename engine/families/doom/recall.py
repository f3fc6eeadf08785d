"""Which stored frames a Doom frame recalls: WorldMAR's FOV-overlap retrieval (`engine.memory.retrieval`) over
the candidates near the target pose.

Only frames at least `min_age` ticks old are candidates: the context holds the last few frames, and the frames
just before it show the same view again, so the memory is for what was seen earlier (the frames it would otherwise
recall teach a model to ignore it). The overlap test knows no walls or distance: a frame far behind the target that faces the same way "sees" all
of the target's points. So candidates farther than `max_distance` map units from the target are left out
first; among the rest the greedy selection picks those covering most of the target's view. Doom is flat for
the camera (pitch 0), as the retrieval expects; its 105-degree FOV wedge is a little wider than Doom's 90.
"""

from __future__ import annotations

import torch

from engine.memory.retrieval import generate_points_in_sphere, retrieve


class Recall:
    def __init__(self, *, points: int = 1000, point_radius: float = 256.0, max_distance: float = 384.0,
                 min_overlap: float = 0.0, min_age: int = 32, seed: int = 0,
                 device: torch.device | str = "cpu") -> None:
        self.points = generate_points_in_sphere(int(points), float(point_radius),
                                                torch.Generator().manual_seed(seed)).to(device)
        self.max_distance = float(max_distance)
        self.min_overlap = float(min_overlap)
        self.min_age = int(min_age)

    def newest_candidate(self, target: int, context: int) -> int:
        """The newest frame number target frame `target` may recall: older than its `context` frames and at
        least `min_age` ticks old. Training items and the play session both ask this, so they recall alike."""
        return target - max(context + 1, self.min_age)

    def pick(self, target: torch.Tensor, candidates: torch.Tensor, k: int) -> torch.Tensor:
        """Indices into `candidates` (n, 5) of up to k recalled frames for `target` (5,), best first."""
        if k == 0 or len(candidates) == 0:
            return torch.zeros(0, dtype=torch.int64, device=candidates.device)
        near = torch.nonzero((candidates[:, :3] - target[:3]).norm(dim=1) <= self.max_distance).flatten()
        if len(near) == 0:
            return near
        flat = candidates[near].clone()
        flat[:, 3] = 0  # pitch 0: the retrieval's elevation band is then the horizon's
        target = target.clone()
        target[3] = 0
        result = retrieve(target, flat, self.points.to(flat.device), num_prev_frames=0,
                          min_overlap=self.min_overlap, k=k, backend="torch")
        return near[result.indices]
