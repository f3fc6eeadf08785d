"""Prompt frames from images and videos."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image

from engine.core.prompt import load_prompt_frames
from engine.errors import ConfigError
from tests.conftest import fixture_root

SAMPLE_IMAGE = fixture_root() / "oasis" / "vpt" / "sample_image_0.png"


def _one_line_error(call) -> str:
    with pytest.raises(ConfigError) as exc:
        call()
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_sample_image_loads_exactly() -> None:
    frames = load_prompt_frames(SAMPLE_IMAGE, 1, 360, 640)
    assert frames.shape == (1, 3, 360, 640) and frames.dtype == torch.float32
    pixels = torch.from_numpy(np.array(Image.open(SAMPLE_IMAGE).convert("RGB")))
    assert torch.equal(frames[0].permute(1, 2, 0), pixels.float() / 255)


@pytest.mark.parametrize(("height", "width"), [(40, 60), (180, 320), (400, 700)])
def test_resize_is_antialiased_bilinear(height: int, width: int) -> None:
    frames = load_prompt_frames(SAMPLE_IMAGE, 1, height, width)
    assert frames.shape == (1, 3, height, width)
    levels = frames * 255
    assert torch.equal(levels, levels.round()), "resized frames are rounded to uint8 levels, as torchvision does"
    # PIL's bilinear filter also widens its support when shrinking; an aliased resize would differ a lot more.
    pil = np.array(Image.open(SAMPLE_IMAGE).convert("RGB").resize((width, height), Image.BILINEAR))
    assert (levels[0].permute(1, 2, 0) - torch.from_numpy(pil).float()).abs().max() <= 1


def test_grey_and_rgba_images_become_rgb(tmp_path: Path) -> None:
    grey = np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) % 256
    Image.fromarray(grey.astype(np.uint8), mode="L").save(tmp_path / "grey.png")
    rgba = np.dstack([np.full((48, 64, 3), 200, np.uint8), np.full((48, 64), 10, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    frames = load_prompt_frames(tmp_path / "grey.png", 1, 48, 64)
    assert frames.shape == (1, 3, 48, 64) and torch.equal(frames[0, 0], frames[0, 2])
    assert torch.equal(load_prompt_frames(tmp_path / "rgba.png", 1, 48, 64), torch.full((1, 3, 48, 64), 200 / 255))


def _write_video(path: Path, n: int, height: int = 48, width: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    frames = np.stack([np.dstack([(xx * 3 + 20 * t) % 256, (yy * 4) % 256, np.full_like(xx, 40 * t % 256)])
                       for t in range(n)]).astype(np.uint8)
    iio.imwrite(path, frames, plugin="FFMPEG", fps=10, macro_block_size=8, quality=10)
    return frames


def test_video_prompt(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    written = _write_video(path, 6)
    frames = load_prompt_frames(path, 4, 48, 64, offset=1)
    assert frames.shape == (4, 3, 48, 64) and frames.dtype == torch.float32
    assert frames.min() >= 0 and frames.max() <= 1
    expected = torch.from_numpy(written[1:5]).permute(0, 3, 1, 2).float() / 255
    assert (frames - expected).abs().mean() < 0.03, "frames come in order, starting at the offset"
    resized = load_prompt_frames(path, 2, 36, 64)
    assert resized.shape == (2, 3, 36, 64)


def test_short_video_gives_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    _write_video(path, 3)
    message = _one_line_error(lambda: load_prompt_frames(path, 4, 48, 64))
    assert str(path) in message and "has 3 frames" in message and "need 4" in message


def test_unreadable_files_give_one_line_errors(tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n")
    message = _one_line_error(lambda: load_prompt_frames(text, 1, 360, 640))
    assert str(text) in message and "not a readable image" in message
    video = tmp_path / "notes.mp4"
    video.write_text("this is not a video\n")
    message = _one_line_error(lambda: load_prompt_frames(video, 1, 360, 640))
    assert str(video) in message and "not a readable video" in message
    missing = tmp_path / "missing.png"
    assert str(missing) in _one_line_error(lambda: load_prompt_frames(missing, 1, 360, 640))
    message = _one_line_error(lambda: load_prompt_frames(SAMPLE_IMAGE, 2, 360, 640))
    assert "needs 2 prompt frames" in message


def test_sixteen_bit_and_float_images_keep_their_brightness(tmp_path: Path) -> None:
    levels = np.linspace(0, 1, 40 * 60).reshape(40, 60)
    Image.fromarray(np.round(levels * 65535).astype(np.uint16)).save(tmp_path / "grey16.png")
    Image.fromarray(levels.astype(np.float32)).save(tmp_path / "grey.tiff")
    expected = torch.from_numpy(np.round(levels * 255) / 255).float()
    for name in ("grey16.png", "grey.tiff"):
        frames = load_prompt_frames(tmp_path / name, 1, 40, 60)
        assert Image.open(tmp_path / name).mode in ("I;16", "I", "F")
        for channel in frames[0]:
            torch.testing.assert_close(channel, expected, rtol=0, atol=1 / 255 + 1e-6)


def test_float_images_outside_zero_one_and_pixel_bombs_are_refused(tmp_path: Path) -> None:
    Image.fromarray(np.full((8, 8), 7.5, np.float32)).save(tmp_path / "bright.tiff")
    assert "values outside 0..1" in _one_line_error(lambda: load_prompt_frames(tmp_path / "bright.tiff", 1, 8, 8))
    bomb = tmp_path / "bomb.png"
    side = 200_000
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    message = _one_line_error(lambda: load_prompt_frames(bomb, 1, 8, 8))
    assert str(bomb) in message and "decompression bomb" in message
