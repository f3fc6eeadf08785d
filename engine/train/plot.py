"""The loss curve of a run as a PNG (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def smoothed(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over up to `window` entries (shorter at the start)."""
    sums = np.cumsum(np.insert(values, 0, 0.0))
    starts = np.maximum(np.arange(1, len(values) + 1) - window, 0)
    return (sums[1:] - sums[starts]) / (np.arange(1, len(values) + 1) - starts)


def plot_loss(entries: Sequence[dict], path: Path, key: str = "loss") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([e["step"] for e in entries if key in e])
    values = np.array([e[key] for e in entries if key in e], dtype=np.float64)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(steps, values, color="tab:blue", alpha=0.35, linewidth=1, label=key)
    if len(values):
        window = max(1, len(values) // 20)
        ax.plot(steps, smoothed(values, window), color="tab:blue", linewidth=2, label=f"mean of {window}")
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.set_yscale("log" if len(values) and values.min() > 0 else "linear")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path
