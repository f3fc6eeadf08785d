"""Prompt (spawn) frames from an image or a video, prepared as generate.py prepares them.

open-oasis reads the file as uint8 RGB, resizes it with torchvision's tensor `resize` (bilinear with
antialiasing, computed in float and rounded back to uint8) and divides by 255. Here the resize is
`F.interpolate(mode="bilinear", antialias=True, align_corners=False)`, the kernel torchvision calls,
followed by the same rounding; frames that already have the target size are used unchanged (v / 255).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from engine.errors import ConfigError

if TYPE_CHECKING:
    from PIL import Image

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mkv", ".mov", ".avi", ".webm")
MAX_PROMPT_PIXELS = 64 * 2**20


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not line.startswith("===")]
    if not lines:
        return type(exc).__name__
    return lines[0] if len(lines) == 1 else f"{lines[0]}: {lines[-1]}"


def check_prompt_image(path: Path) -> None:
    """A one-line ConfigError unless `path` is an image a world can start from (read and converted as it will be)."""
    if not path.is_file():
        raise ConfigError(f"prompt {path} does not exist: expected an image or a video file")
    _read_image(path)


def _read_image(path: Path) -> np.ndarray:
    """(1, H, W, 3) uint8 RGB of an image of any mode and bit depth (`image_rgb`); images over MAX_PROMPT_PIXELS
    are refused from their header, before anything is decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.width * image.height > MAX_PROMPT_PIXELS:
                    raise ConfigError(f"prompt {path} is {image.width}x{image.height} pixels: expected at most "
                                      f"{MAX_PROMPT_PIXELS:,} (a frame is resized to the world's size anyway)")
                return image_rgb(image, path)[None]
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ConfigError(f"prompt {path} claims more pixels than any image a world can use (a decompression "
                          f"bomb?): expected at most {MAX_PROMPT_PIXELS:,}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ConfigError(f"prompt {path} is not a readable image ({_one_line(exc)})") from None


def image_rgb(image: Image.Image, path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a PIL image, scaled by its bit depth: 16-bit and 32-bit integer grey levels from
    0..65535, float images from 0..1 (refused when their values lie outside); the 8-bit modes as Pillow converts."""
    if image.mode in ("RGB", "L", "P", "1", "RGBA", "LA", "PA", "CMYK", "YCbCr", "RGBX", "La"):
        return np.array(image.convert("RGB"))
    values = np.asarray(image)
    if image.mode.startswith("I"):
        if values.min() < 0 or values.max() > 65535:
            raise ConfigError(f"prompt {path} is a {image.mode} image with values {values.min()}..{values.max()}: "
                              "expected 16-bit grey levels 0..65535")
        grey = np.round(values.astype(np.float64) * (255 / 65535))
    elif image.mode == "F":
        if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
            raise ConfigError(f"prompt {path} is a floating-point image with values outside 0..1 (or NaN): expected "
                              "brightness in 0..1, or an 8/16-bit image")
        grey = np.round(values.astype(np.float64) * 255)
    else:
        raise ConfigError(f"prompt {path} is a {image.mode} image: expected RGB, grey, palette or 16-bit grey")
    return np.repeat(grey.astype(np.uint8)[..., None], 3, axis=-1)


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
