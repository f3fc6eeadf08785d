"""The pygame window with an OpenGL 3.3 core context that moderngl draws into."""

from __future__ import annotations

import ctypes.util
import importlib
import importlib.util
import os
import sys

import moderngl
import pygame

from engine.errors import EngineError

# SDL's stand-in drivers: no screen to show anything on (SDL picks them when no display is found).
_NO_SCREEN_DRIVERS = ("offscreen", "dummy")
_GL_PACKAGES = "Debian/Ubuntu: apt install libgl1 libglx-mesa0 libgl1-mesa-dri libegl1"


def _no_display_error() -> EngineError:
    return EngineError("no display to open a window on (DISPLAY/WAYLAND_DISPLAY unset or unreachable): "
                       "run with --headless to write frames to files instead")


def _no_display_variables() -> bool:
    """Linux/BSD with neither X11 nor Wayland named (and no SDL driver chosen by hand): checked before
    SDL probes the drivers, which prints its own complaints about the environment."""
    unix = sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd"))
    names = ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER")
    return unix and not any(os.environ.get(name) for name in names)


def _missing_gl_library() -> str | None:
    """The OpenGL library that cannot be found on this system, if any (Linux only)."""
    if sys.platform.startswith("linux") and ctypes.util.find_library("GL") is None:
        return "libGL.so.1"
    return None


def _gl_error(reason: str) -> EngineError:
    missing = _missing_gl_library()
    if missing:
        return EngineError(f"OpenGL library {missing} not found ({_GL_PACKAGES}), or run with --headless")
    first_line = reason.strip().splitlines()[0] if reason.strip() else "unknown reason"
    return EngineError(f"could not create an OpenGL 3.3 core context ({first_line}): "
                       "update the graphics driver, or run with --headless")


def _load_triton_before_gl() -> None:
    """torch imports triton lazily (e.g. for `normal_` on the meta device, where DIAMOND's action embeddings are
    built); triton's LLVM loaded after Mesa's llvmpipe (the GL context) segfaults the process, so load it first."""
    if importlib.util.find_spec("triton") is not None:
        importlib.import_module("triton")


class Window:
    """A resizable window; `ctx` is its moderngl context. Sizes are (width, height) in pixels."""

    def __init__(self, size: tuple[int, int], title: str, fullscreen: bool = False) -> None:
        if _no_display_variables():
            raise _no_display_error()
        try:
            pygame.display.init()
        except pygame.error:
            raise _no_display_error() from None
        driver = pygame.display.get_driver()
        if driver in _NO_SCREEN_DRIVERS and os.environ.get("SDL_VIDEODRIVER") != driver:
            pygame.display.quit()
            raise _no_display_error()
        pygame.font.init()
        pygame.display.gl_set_attribute(pygame.GL_CONTEXT_MAJOR_VERSION, 3)
        pygame.display.gl_set_attribute(pygame.GL_CONTEXT_MINOR_VERSION, 3)
        pygame.display.gl_set_attribute(pygame.GL_CONTEXT_PROFILE_MASK, pygame.GL_CONTEXT_PROFILE_CORE)
        pygame.display.gl_set_attribute(pygame.GL_DOUBLEBUFFER, 1)
        self.title = title
        self.windowed_size = size
        self.fullscreen = False
        _load_triton_before_gl()
        try:
            self._set_mode(size, fullscreen=False)
            self.ctx = moderngl.create_context(require=330)
        except (pygame.error, moderngl.Error, OSError, ValueError) as exc:
            pygame.display.quit()
            raise _gl_error(str(exc)) from None
        if fullscreen:
            self.toggle_fullscreen()

    def _set_mode(self, size: tuple[int, int], fullscreen: bool) -> None:
        flags = pygame.OPENGL | pygame.DOUBLEBUF
        flags |= pygame.FULLSCREEN if fullscreen else pygame.RESIZABLE
        try:
            pygame.display.set_mode(size, flags, vsync=1)
        except pygame.error:
            pygame.display.set_mode(size, flags)
        # pygame-ce 2.5.8 drops a caption set before a failed vsync set_mode and its retry: set it after
        pygame.display.set_caption(self.title)

    @property
    def size(self) -> tuple[int, int]:
        return pygame.display.get_window_size()

    def toggle_fullscreen(self) -> None:
        """Desktop-resolution fullscreen and back; the GL context survives the mode change."""
        pygame.display.toggle_fullscreen()
        self.fullscreen = not self.fullscreen

    def set_title(self, title: str) -> None:
        self.title = title
        pygame.display.set_caption(title)

    def flip(self) -> None:
        pygame.display.flip()

    def close(self) -> None:
        self.ctx.release()
        pygame.display.quit()

    def __enter__(self) -> Window:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
