"""Per-frame PSNR and SSIM between frame batches, and per-(condition, horizon) summaries.

Frames are (N, H, W, 3), uint8 (0..255) or float in [0, 1], numpy arrays or torch tensors; scores are
computed with torchmetrics' functional implementations on [0, 1] floats, on the tensors' device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from engine.errors import EngineError

Frames = np.ndarray | torch.Tensor

# Identical frames have PSNR = inf; means use this value instead so that a world replaying the real frames
# scores the maximum. A uint8 frame of M values that differs at all scores at most 48.1 + 10*log10(M) dB:
# below the cap up to ~150k values (64x80x3 = 15,360), above it for larger frames (640x360x3: 106.5 dB),
# which are then capped too.
PSNR_CAP_DB = 100.0

# Frames per batch are chosen so a batch holds about this many pixels (bounds SSIM's intermediate maps).
_PIXELS_PER_BATCH = 1 << 21


def psnr_per_frame(pred: Frames, target: Frames, *, batch_size: int | None = None) -> np.ndarray:
    """PSNR in dB of each frame, float64 (N,); identical frames give +inf."""
    return _per_frame(pred, target, batch_size, _psnr)


def ssim_per_frame(pred: Frames, target: Frames, *, batch_size: int | None = None) -> np.ndarray:
    """SSIM of each frame (gaussian kernel 11, sigma 1.5, mean over channels and pixels), float64 (N,)."""
    return _per_frame(pred, target, batch_size, _ssim)


def psnr_db(mse: torch.Tensor) -> torch.Tensor:
    """PSNR of a mean squared error between images in [-1, 1] (equal to PSNR on [0, 1] or uint8 pixels): the
    training-side figure of a loss that already has the error, without a second pass over the frames."""
    return 10 * torch.log10(4 / mse.clamp(min=1e-10))


def _psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return peak_signal_noise_ratio(pred, target, data_range=1.0, reduction="none", dim=(1, 2, 3))


def _ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return structural_similarity_index_measure(pred, target, data_range=1.0, reduction="none")


def _per_frame(pred: Frames, target: Frames, batch_size: int | None,
               score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> np.ndarray:
    if tuple(pred.shape) != tuple(target.shape):
        raise EngineError(f"frame batches differ in shape: {tuple(pred.shape)} vs {tuple(target.shape)}")
    if len(pred.shape) != 4 or pred.shape[-1] != 3:
        raise EngineError(f"frames must be (N, H, W, 3), got {tuple(pred.shape)}")
    n, h, w, _ = pred.shape
    step = batch_size or max(1, _PIXELS_PER_BATCH // (h * w))
    device = next((x.device for x in (pred, target) if isinstance(x, torch.Tensor)), torch.device("cpu"))
    out = []
    with torch.no_grad():
        for lo in range(0, n, step):
            a = _unit_nchw(pred[lo:lo + step], device)
            b = _unit_nchw(target[lo:lo + step], device)
            out.append(score(a, b).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def _unit_nchw(frames: Frames, device: torch.device) -> torch.Tensor:
    """(n, H, W, 3) uint8 or [0, 1] float -> (n, 3, H, W) float32 in [0, 1] on `device`."""
    if isinstance(frames, np.ndarray):
        if frames.dtype == np.uint8:
            t = torch.from_numpy(frames.astype(np.float32) / 255.0)
        elif np.issubdtype(frames.dtype, np.floating):
            t = torch.from_numpy(frames.astype(np.float32))
        else:
            raise EngineError(f"frames must be uint8 or float, got {frames.dtype}")
    elif frames.dtype == torch.uint8:
        t = frames.to(torch.float32) / 255.0
    elif frames.is_floating_point():
        t = frames.to(torch.float32)
    else:
        raise EngineError(f"frames must be uint8 or float, got {frames.dtype}")
    return t.to(device).permute(0, 3, 1, 2)


@dataclass(frozen=True)
class MetricStats:
    """Mean and (population) std of per-frame scores; scores at or above `cap` count as `cap`."""

    mean: float
    std: float
    count: int
    n_capped: int = 0
    cap: float | None = None


def summarize(values: np.ndarray | list[float], *, cap: float | None = None) -> MetricStats:
    """Mean, std and count of per-frame scores, with scores >= `cap` (e.g. PSNR = inf) clipped and counted."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if np.isnan(v).any():
        raise EngineError(f"{int(np.isnan(v).sum())} per-frame scores are NaN")
    if v.size == 0:
        return MetricStats(mean=float("nan"), std=float("nan"), count=0, cap=cap)
    n_capped = 0
    if cap is not None:
        n_capped = int((v >= cap).sum())
        v = np.minimum(v, cap)
    return MetricStats(mean=float(v.mean()), std=float(v.std()), count=int(v.size), n_capped=n_capped, cap=cap)


def summarize_psnr(values: np.ndarray | list[float], *, cap_db: float = PSNR_CAP_DB) -> MetricStats:
    """PSNR summary in which identical frames (inf) and any frame above `cap_db` count as `cap_db`."""
    return summarize(values, cap=cap_db)


class MetricAccumulator:
    """Per-frame scores of one metric keyed by (condition, horizon), e.g. ("memory off", 32).

    Pass `cap=PSNR_CAP_DB` for PSNR so that identical frames do not make means infinite.
    """

    def __init__(self, *, cap: float | None = None) -> None:
        self.cap = cap
        self._values: dict[tuple[str, int], list[np.ndarray]] = {}

    def add(self, condition: str, horizon: int, values: np.ndarray | list[float] | float) -> None:
        """Append per-frame scores (one value or a 1-D batch) under (condition, horizon)."""
        v = np.atleast_1d(np.asarray(values, dtype=np.float64)).ravel()
        self._values.setdefault((condition, int(horizon)), []).append(v)

    def keys(self) -> list[tuple[str, int]]:
        """(condition, horizon) pairs in the order first added."""
        return list(self._values)

    def conditions(self) -> list[str]:
        return list(dict.fromkeys(c for c, _ in self._values))

    def values(self, condition: str, horizon: int) -> np.ndarray:
        """All per-frame scores added under (condition, horizon), uncapped."""
        return np.concatenate(self._values[(condition, int(horizon))])

    def stats(self, condition: str, horizon: int) -> MetricStats:
        return summarize(self.values(condition, horizon), cap=self.cap)

    def curve(self, condition: str) -> dict[int, float]:
        """Mean score per horizon of one condition, horizons ascending: a line of the PSNR-vs-horizon plot."""
        horizons = sorted(h for c, h in self._values if c == condition)
        return {h: self.stats(condition, h).mean for h in horizons}

    def as_dict(self) -> dict[str, dict[int, MetricStats]]:
        """{condition: {horizon: stats}} for the final JSON."""
        out: dict[str, dict[int, MetricStats]] = {}
        for condition, horizon in self._values:
            out.setdefault(condition, {})[horizon] = self.stats(condition, horizon)
        return out
