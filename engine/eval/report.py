"""The evaluation's outputs: a text table, a PSNR-vs-horizon plot, side-by-side videos, a final JSON line."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from engine.errors import EngineError

# |real - dream| is multiplied by this before clipping to 255, so small errors show in the video.
DIFF_GAIN = 4
# Frames are upscaled (nearest) by the smallest integer factor that makes them at least this tall.
MIN_VIDEO_HEIGHT = 240


@dataclass(frozen=True)
class TableRow:
    """One condition of the results table (None where it was not measured): PSNR in dB."""

    condition: str
    teacher_forced_psnr: float | None = None
    teacher_forced_ssim: float | None = None
    open_loop_psnr: Mapping[int, float] = field(default_factory=dict)


def format_table(rows: Sequence[TableRow]) -> str:
    """A plain aligned text table: one line per condition, open-loop columns for every horizon in any row."""
    horizons = sorted({h for row in rows for h in row.open_loop_psnr})
    header = ["condition", "TF PSNR", "TF SSIM", *(f"OL PSNR@{h}" for h in horizons)]
    body = [[row.condition, _number(row.teacher_forced_psnr, 2), _number(row.teacher_forced_ssim, 4),
             *(_number(row.open_loop_psnr.get(h), 2) for h in horizons)] for row in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join([cells[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))])

    rule = "-" * len(line(header))
    legend = "TF: teacher-forced (real context), OL@h: open-loop, h frames after the last real one; PSNR in dB"
    return "\n".join([line(header), rule, *(line(cells) for cells in body), rule, legend])


def _number(value: float | None, digits: int) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.{digits}f}" if math.isfinite(value) else ("inf" if value > 0 else "-inf")


def write_plot(curves: Mapping[str, Mapping[int, float]], path: str | Path, *,
               title: str = "open-loop PSNR against horizon") -> Path:
    """A PNG of PSNR against horizon (>= 1, log2 axis), one line per condition; non-finite points are left out."""
    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for condition, curve in curves.items():
        points = sorted((h, v) for h, v in curve.items() if v is not None and math.isfinite(v))
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=condition)
    ax.set_xscale("log", base=2)
    horizons = sorted({h for curve in curves.values() for h in curve})
    ax.set_xticks(horizons, [str(h) for h in horizons])
    ax.minorticks_off()
    ax.set_xlabel("horizon (frames after the last real frame)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def side_by_side(real: np.ndarray | torch.Tensor, dream: np.ndarray | torch.Tensor, scale: int) -> np.ndarray:
    """(T, H*scale, 3*W*scale, 3) uint8: real | dream | DIFF_GAIN*|real - dream|, upscaled (nearest)."""
    a, b = _uint8_frames(real), _uint8_frames(dream)
    if a.shape != b.shape:
        raise EngineError(f"side-by-side: real {a.shape} and dream {b.shape} frames differ in shape")
    diff = np.minimum(np.abs(a.astype(np.int16) - b.astype(np.int16)) * DIFF_GAIN, 255).astype(np.uint8)
    panel = np.concatenate([a, b, diff], axis=2)
    return panel.repeat(scale, axis=1).repeat(scale, axis=2)


def write_side_by_side(real: np.ndarray | torch.Tensor, dream: np.ndarray | torch.Tensor, path: str | Path,
                       fps: float, *, scale: int | None = None) -> Path:
    """An H.264 mp4 (yuv420p) of `side_by_side` frames; `scale` defaults to reaching MIN_VIDEO_HEIGHT.

    The picture is padded by one edge pixel where a size is odd, as yuv420p needs even sizes.
    """
    height = int(real.shape[1])
    scale = scale or max(1, -(-MIN_VIDEO_HEIGHT // height))
    frames = side_by_side(real, dream, scale)
    frames = np.pad(frames, ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0)), mode="edge")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = imageio_ffmpeg.write_frames(str(path), (frames.shape[2], frames.shape[1]), fps=fps, codec="libx264",
                                         pix_fmt_out="yuv420p", macro_block_size=1, quality=8)
    writer.send(None)  # start the encoder
    try:
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
    finally:
        writer.close()
    return path


def _uint8_frames(frames: np.ndarray | torch.Tensor) -> np.ndarray:
    array = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise EngineError(f"side-by-side: frames must be uint8 (T, H, W, 3), got {array.dtype} {array.shape}")
    return array


def final_json(result: Mapping) -> str:
    """`result` as one line of strict JSON: +-inf become "inf"/"-inf", NaN becomes null, numpy values and
    dataclasses become plain numbers, lists and objects (keys as strings)."""
    return json.dumps(_plain(result), allow_nan=False, separators=(",", ":"))


def _plain(value: object) -> object:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray | np.generic):
        value = value.tolist()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return value if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | range):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, str | int | bool):
        return value
    raise TypeError(f"final_json: cannot encode {type(value).__name__}")
