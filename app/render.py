"""moderngl renderer: the latest frame as a texture on a letterboxed quad, RGBA overlays on top."""

from __future__ import annotations

from pathlib import Path

import moderngl
import numpy as np

SHADER_DIR = Path(__file__).resolve().parents[1] / "assets" / "shaders"
FILTERS = ("nearest", "bilinear", "sharp")


def letterbox(frame_size: tuple[int, int], window_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Largest rectangle of the frame's aspect that fits the window, centred: (x, y, w, h) in
    pixels from the window's top-left corner. frame_size is (H, W), window_size (W, H)."""
    frame_h, frame_w = frame_size
    win_w, win_h = window_size
    scale = min(win_w / frame_w, win_h / frame_h)
    w = max(1, min(win_w, round(frame_w * scale)))
    h = max(1, min(win_h, round(frame_h * scale)))
    return (win_w - w) // 2, (win_h - h) // 2, w, h


def _ndc(rect: tuple[int, int, int, int], window_size: tuple[int, int]) -> tuple[float, float, float, float]:
    """Top-left pixel rectangle -> (x0, y0, x1, y1) in normalised device coordinates (y up)."""
    x, y, w, h = rect
    win_w, win_h = window_size
    return (2 * x / win_w - 1, 1 - 2 * (y + h) / win_h, 2 * (x + w) / win_w - 1, 1 - 2 * y / win_h)


class Renderer:
    """Draws into the current window's default framebuffer; the caller flips."""

    def __init__(self, ctx: moderngl.Context, filter_name: str = "bilinear") -> None:
        if filter_name not in FILTERS:
            raise ValueError(f"filter must be one of {', '.join(FILTERS)}, got '{filter_name}'")
        self.ctx = ctx
        self.filter = filter_name
        vertex = (SHADER_DIR / "quad.vert").read_text()
        fragment = "sharp.frag" if filter_name == "sharp" else "plain.frag"
        self.frame_program = ctx.program(vertex_shader=vertex, fragment_shader=(SHADER_DIR / fragment).read_text())
        self.overlay_program = ctx.program(vertex_shader=vertex,
                                           fragment_shader=(SHADER_DIR / "overlay.frag").read_text())
        self.frame_quad = ctx.vertex_array(self.frame_program, [])
        self.overlay_quad = ctx.vertex_array(self.overlay_program, [])
        self.frame_texture: moderngl.Texture | None = None
        self.frame_size: tuple[int, int] | None = None
        self._overlays: dict[str, moderngl.Texture] = {}

    def upload(self, frame: np.ndarray) -> None:
        """Frame (H, W, 3) uint8, top row first."""
        height, width = frame.shape[:2]
        if self.frame_size != (height, width):
            if self.frame_texture is not None:
                self.frame_texture.release()
            self.frame_texture = self.ctx.texture((width, height), 3, dtype="f1")
            gl_filter = moderngl.NEAREST if self.filter == "nearest" else moderngl.LINEAR
            self.frame_texture.filter = (gl_filter, gl_filter)
            self.frame_texture.repeat_x = self.frame_texture.repeat_y = False
            self.frame_size = (height, width)
        self.frame_texture.write(np.ascontiguousarray(frame), alignment=1)

    def draw_frame(self, window_size: tuple[int, int]) -> tuple[int, int, int, int] | None:
        """Clear to black and draw the frame letterboxed; returns the image rectangle (top-left pixels)."""
        self.ctx.viewport = (0, 0, *window_size)
        self.ctx.disable(moderngl.BLEND)
        self.ctx.clear(0.0, 0.0, 0.0, 1.0)
        if self.frame_texture is None:
            return None
        rect = letterbox(self.frame_size, window_size)
        self.frame_program["rect"].value = _ndc(rect, window_size)
        if self.filter == "sharp":
            self.frame_program["source_size"].value = (self.frame_size[1], self.frame_size[0])
            self.frame_program["target_size"].value = (rect[2], rect[3])
        self.frame_texture.use(0)
        self.frame_quad.render(moderngl.TRIANGLE_STRIP, vertices=4)
        return rect

    def draw_overlay(self, name: str, rgba: np.ndarray | None, position: tuple[int, int],
                     window_size: tuple[int, int]) -> None:
        """Blend an RGBA image (h, w, 4) at `position` (top-left pixels). `rgba=None` redraws the
        image last uploaded under `name` without uploading it again."""
        texture = self._overlays.get(name)
        if rgba is not None:
            height, width = rgba.shape[:2]
            if texture is None or texture.size != (width, height):
                if texture is not None:
                    texture.release()
                texture = self.ctx.texture((width, height), 4, dtype="f1")
                texture.filter = (moderngl.NEAREST, moderngl.NEAREST)
                self._overlays[name] = texture
            texture.write(np.ascontiguousarray(rgba), alignment=1)
        if texture is None:
            return
        width, height = texture.size
        self.ctx.viewport = (0, 0, *window_size)
        self.ctx.enable(moderngl.BLEND)
        self.ctx.blend_func = moderngl.SRC_ALPHA, moderngl.ONE_MINUS_SRC_ALPHA
        self.overlay_program["rect"].value = _ndc((*position, width, height), window_size)
        texture.use(0)
        self.overlay_quad.render(moderngl.TRIANGLE_STRIP, vertices=4)
        self.ctx.disable(moderngl.BLEND)

    def overlay_size(self, name: str) -> tuple[int, int]:
        """(width, height) of the image last uploaded under `name`."""
        return self._overlays[name].size

    def read_screen(self, window_size: tuple[int, int]) -> np.ndarray:
        """What was drawn (before the flip), as (H, W, 3) uint8 with the top row first."""
        width, height = window_size
        data = self.ctx.screen.read(viewport=(0, 0, width, height), components=3, alignment=1)
        return np.frombuffer(data, np.uint8).reshape(height, width, 3)[::-1].copy()
