"""Learning-rate schedule: linear warm-up, then a cosine decay to a floor."""

from __future__ import annotations

import math


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the peak learning rate at optimizer step `step` (0-based).

    Warm-up: (step + 1) / warmup_steps, so the first step already moves; then a half cosine from 1 down to
    `min_ratio` at `total_steps`, held there afterwards. A pure function of the step, so a resumed run
    needs no scheduler state.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
