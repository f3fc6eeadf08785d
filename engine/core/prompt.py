"""Prompt (spawn) frames from an image or a video, prepared as generate.py prepares them.

open-oasis reads the file as uint8 RGB, resizes it with torchvision's tensor `resize` (bilinear with
antialiasing, computed in float and rounded back to uint8) and divides by 255. Here the resize is
`F.interpolate(mode="bilinear", antialias=True, align_corners=False)`, the kernel torchvision calls,
followed by the same rounding; frames that already have the target size are used unchanged (v / 255).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.errors import ConfigError

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mkv", ".mov", ".avi", ".webm")


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not line.startswith("===")]
    if not lines:
        return type(exc).__name__
    return lines[0] if len(lines) == 1 else f"{lines[0]}: {lines[-1]}"


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))[None]
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ConfigError(f"prompt {path} is not a readable image ({_one_line(exc)})") from None


def _read_video(path: Path, n_frames: int, offset: int) -> np.ndarray:
    import imageio.v3 as iio

    frames = []
    try:
        for index, frame in enumerate(iio.imiter(path, plugin="FFMPEG")):
            if index >= offset:
                frames.append(np.asarray(frame)[..., :3])
            if len(frames) == n_frames:
                break
    except (OSError, RuntimeError, ValueError, IndexError) as exc:
        raise ConfigError(f"prompt {path} is not a readable video ({_one_line(exc)})") from None
    if len(frames) < n_frames:
        raise ConfigError(f"prompt video {path} has {len(frames) + offset} frames; {n_frames} prompt frames "
                          f"from frame {offset} need {n_frames + offset}")
    return np.stack(frames)


def _read_recording(path: Path, n_frames: int, offset: int) -> np.ndarray:
    from engine.recordings import read_recording

    frames = read_recording(path)["frames"]
    if len(frames) < offset + n_frames:
        raise ConfigError(f"prompt recording {path} has {len(frames)} frames; {n_frames} prompt frames from frame "
                          f"{offset} need {n_frames + offset}")
    return frames[offset:offset + n_frames]


def resize_frames(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8-valued frames (T, 3, h, w) -> (T, 3, height, width), rounded as torchvision rounds uint8 output."""
    if frames.shape[-2:] == (height, width):
        return frames.float()
    resized = F.interpolate(frames.float(), size=(height, width), mode="bilinear", antialias=True,
                            align_corners=False)
    return resized.round().clamp(0, 255)


def load_prompt_frames(path: str | Path, n_frames: int, height: int, width: int, offset: int = 0) -> torch.Tensor:
    """Frames (n_frames, 3, height, width) float32 in [0, 1] from an image (n_frames must be 1), a video or a
    recording (`.npz`, engine/recordings).

    A video or a recording gives its frames offset .. offset + n_frames - 1; an image gives one frame, as in
    the reference, which rejects an image when more prompt frames are asked for.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"prompt {path} does not exist: expected an image or a video file")
    if n_frames < 1 or offset < 0:
        raise ConfigError(f"prompt {path}: need n_frames >= 1 and offset >= 0, got {n_frames} and {offset}")
    if path.suffix.lower() in VIDEO_SUFFIXES:
        frames = _read_video(path, n_frames, offset)
    elif path.suffix.lower() == ".npz":
        frames = _read_recording(path, n_frames, offset)
    else:
        if n_frames != 1:
            raise ConfigError(f"prompt {path} is an image (1 frame) but the world needs {n_frames} prompt frames: "
                              "pass a video")
        frames = _read_image(path)
    tensor = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    return (resize_frames(tensor, height, width) / 255.0).contiguous()
