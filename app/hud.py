"""HUD and controls overlay: live numbers as text lines, rasterised by pygame.font into RGBA images."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pygame

WHITE = (235, 235, 235)
GREY = (170, 170, 170)
RED = (255, 70, 60)
YELLOW = (255, 215, 90)
PANEL = (0, 0, 0, 165)

Line = tuple[str, tuple[int, int, int]]


@dataclass
class HudInfo:
    """What the HUD shows; None hides a line."""

    world: str
    device: str
    dtype: str
    backend: str
    steps: int | None = None
    model_fps: float | None = None
    stages_ms: dict[str, float] = field(default_factory=dict)
    latency_ms: float | None = None
    frame: str = ""
    action: str | None = None
    recording_s: float | None = None
    pose: Sequence[float] | None = None
    status: str | None = None
    world_items: Sequence[str] = ()


def hud_lines(info: HudInfo) -> list[Line]:
    lines: list[Line] = [(f"{info.world} · {info.device} · {info.dtype} · {info.backend}", WHITE)]
    speed = [] if info.model_fps is None else [f"{info.model_fps:.1f} fps"]
    if info.stages_ms:
        stages = ", ".join(f"{name} {ms:.1f}" for name, ms in info.stages_ms.items())
        speed.append(f"tick {sum(info.stages_ms.values()):.1f} ms ({stages})")
    if speed:
        lines.append((f"model {' · '.join(speed)}", WHITE))
    details = []
    if info.latency_ms is not None:
        details.append(f"input to display {info.latency_ms:.0f} ms")
    if info.steps:  # a world that denoises nothing (the real game) has no count to show
        details.append(f"{info.steps} denoising steps")
    if info.frame:
        details.append(info.frame)
    if details:
        lines.append((" · ".join(details), GREY))
    if info.action is not None:
        lines.append((f"action: {info.action}", GREY))
    if info.pose is not None:
        x, y, z, pitch, yaw = (float(v) for v in info.pose)
        lines.append((f"pose x {x:.1f} y {y:.1f} z {z:.1f} · pitch {pitch:.0f}° yaw {yaw:.0f}°", GREY))
    if info.world_items:
        lines.append((" · ".join(info.world_items), GREY))
    if info.recording_s is not None:
        minutes, seconds = divmod(int(info.recording_s), 60)
        lines.append((f"REC {minutes:02d}:{seconds:02d}", RED))
    if info.status:
        lines.append((info.status, YELLOW))
    return lines


def controls_lines(game_controls: Sequence[tuple[str, str]], player_controls: Sequence[tuple[str, str]]) -> list[Line]:
    """Two columns separated by a tab: key, what it does."""
    lines: list[Line] = [("Controls\t(F1 hides this)", YELLOW)]
    lines += [(f"{key}\t{what}", WHITE) for key, what in game_controls]
    lines.append(("", WHITE))
    lines += [(f"{key}\t{what}", GREY) for key, what in player_controls]
    return lines


def controls_text(game_controls: Sequence[tuple[str, str]], player_controls: Sequence[tuple[str, str]]) -> str:
    """The controls as printed to the terminal at start."""
    rows = [(key, what) for key, what in (*game_controls, *player_controls)]
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"  {key:<{width}}  {what}" for key, what in rows)


class TextPanel:
    """Rasterises text lines on a translucent panel; fonts are cached per pixel size."""

    def __init__(self) -> None:
        pygame.font.init()
        self._fonts: dict[int, pygame.font.Font] = {}

    def font(self, size: int) -> pygame.font.Font:
        if size not in self._fonts:
            self._fonts[size] = pygame.font.Font(None, size)
        return self._fonts[size]

    def measure(self, lines: Sequence[Line], size: int, padding: int = 6) -> tuple[int, int]:
        """(width, height) of the panel `render` would make."""
        font = self.font(size)
        widths = [[font.size(part or " ")[0] for part in text.split("\t", 1)] for text, _ in lines]
        gap = font.size("  ")[0]
        column = max((row[0] + gap for row in widths if len(row) == 2), default=0)
        width = max(row[0] if len(row) == 1 else column + row[1] for row in widths)
        return width + 2 * padding, font.get_linesize() * len(lines) + 2 * padding

    def render(self, lines: Sequence[Line], size: int, padding: int = 6) -> np.ndarray:
        """(h, w, 4) uint8 RGBA image of the lines, top row first; a tab starts an aligned second column."""
        font = self.font(size)
        rows = [[font.render(part or " ", True, color) for part in text.split("\t", 1)] for text, color in lines]
        gap = font.size("  ")[0]
        column = max((row[0].get_width() + gap for row in rows if len(row) == 2), default=0)
        width = max(row[0].get_width() if len(row) == 1 else column + row[1].get_width() for row in rows)
        height = sum(row[0].get_height() for row in rows)
        panel = pygame.Surface((width + 2 * padding, height + 2 * padding), pygame.SRCALPHA)
        panel.fill(PANEL)
        y = padding
        for row in rows:
            panel.blit(row[0], (padding, y))
            if len(row) == 2:
                panel.blit(row[1], (padding + column, y))
            y += row[0].get_height()
        width, height = panel.get_size()
        return np.frombuffer(pygame.image.tobytes(panel, "RGBA"), np.uint8).reshape(height, width, 4)


def font_size(window_height: int) -> int:
    """Text height in pixels that stays readable in small windows and unobtrusive in large ones."""
    return int(min(24, max(14, window_height / 32)))


def thumbnails_panel(images: Sequence[np.ndarray], height: int, padding: int = 4) -> np.ndarray:
    """(h, w, 4) uint8 RGBA strip of small images (e.g. a world's recalled memory frames), each scaled by an
    integer factor (nearest) to about `height` pixels, on the HUD's translucent backdrop."""
    scale = max(1, round(height / max(image.shape[0] for image in images)))
    tiles = [np.repeat(np.repeat(image[..., :3], scale, 0), scale, 1) for image in images]
    tall = max(tile.shape[0] for tile in tiles)
    width = sum(tile.shape[1] for tile in tiles) + padding * (len(tiles) + 1)
    panel = np.zeros((tall + 2 * padding, width, 4), dtype=np.uint8)
    panel[...] = PANEL
    x = padding
    for tile in tiles:
        panel[padding:padding + tile.shape[0], x:x + tile.shape[1], :3] = tile
        panel[padding:padding + tile.shape[0], x:x + tile.shape[1], 3] = 255
        x += tile.shape[1] + padding
    return panel
