"""The desktop player (`python launcher.py --world minecraft`): window loop and the wiring of its parts.

The window thread polls events (-> input state and commands), shows the newest finished frame
(letterboxed, HUD and controls on top) and flips; the inference thread (app/inference.py) produces
frames from the input sampled at each tick's start. `--replay` swaps the input for a recording's
actions, `--view` swaps the model for a recording's frames.
"""

from __future__ import annotations

import argparse
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Protocol, TypeVar

import pygame
from PIL import Image

from app.hud import (
    HudInfo,
    Line,
    TextPanel,
    controls_lines,
    controls_text,
    font_size,
    hud_lines,
    thumbnails_panel,
)
from app.inference import InferenceLoop, Tick
from app.input import CONTROLS, Command, InputHandler, InputState, game_controls, live_actions
from app.recorder import Recorder
from app.render import Renderer
from app.replay import RecordingViewer, ReplayPlan, ReplaySource, load_replay
from app.window import Window
from engine.actions.keymap import Keymap
from engine.backends.device import leave_core_for_io
from engine.core.config import load_world_config
from engine.core.loader import open_session, session_extras, with_ground_truth, world_overrides
from engine.core.session import Session
from engine.errors import ConfigError
from engine.recordings import install_signal_finalizers

DEFAULT_WINDOW = (1280, 720)
POLL_MS = 4
HUD_REFRESH_S = 0.25
MARGIN = 8
T = TypeVar("T")
PLAYBACK_CONTROLS = [row for row in CONTROLS if row[0] not in ("mouse", "Esc")]
CONTROLS_SHOWN_S = 8.0  # the controls overlay shows this long at the start, then F1 brings it back
FIT = 0.92  # an overlay takes at most this fraction of the window's width and height


class FrameSource(Protocol):
    """What the window loop needs from the inference loop or the recording viewer."""

    error: BaseException | None
    finished: bool

    @property
    def paused(self) -> bool: ...

    def latest(self) -> Tick | None: ...

    def set_paused(self, paused: bool) -> None: ...

    def request_step(self) -> None: ...

    def request_reset(self) -> None: ...

    def ticks_per_second(self) -> float | None: ...

    def stop(self, timeout: float | None = None) -> None: ...


class Player:
    """One window, one frame source. `iterate` runs one pass of the loop; `run` loops until quit."""

    def __init__(self, window: Window, renderer: Renderer, source: FrameSource, handler: InputHandler, *,
                 info: HudInfo, position: Callable[[Tick], str], status: Callable[[], str | None],
                 recorder: Recorder | None, controls: list[Line], screenshot_dir: Path,
                 describe: Callable[[Sequence[float]], str | None] = lambda action: None) -> None:
        self.window, self.renderer, self.source, self.handler = window, renderer, source, handler
        self.info, self.position, self.status, self.describe = info, position, status, describe
        self.recorder = recorder
        self.controls = controls
        self.screenshot_dir = screenshot_dir
        self.show_hud = True
        self.show_controls = True
        self._controls_until: float | None = time.perf_counter() + CONTROLS_SHOWN_S
        self.latency_ms: float | None = None
        self.shown: Tick | None = None
        self.frame_rect: tuple[int, int, int, int] | None = None
        self.text = TextPanel()
        self._hud: list[Line] = []
        self._hud_time = 0.0
        self._uploaded: dict[str, tuple] = {}
        self._dirty = True
        self._screenshot = False

    def run(self) -> None:
        while self.iterate():
            pass

    def iterate(self, wait_ms: int = POLL_MS) -> bool:
        """Events, newest frame, draw if anything changed. False once the player asked to quit."""
        if self.source.error is not None:
            raise self.source.error
        for event in self._events(wait_ms):
            if event.type in (pygame.VIDEORESIZE, pygame.WINDOWSIZECHANGED, pygame.WINDOWEXPOSED):
                self._dirty = True
            for command in self.handler.handle(event):
                if not self._command(command):
                    return False
        tick = self.source.latest()
        fresh = tick is not None and tick is not self.shown
        if fresh:
            self.renderer.upload(tick.frame)
            self.shown = tick
        now = time.perf_counter()
        if self._controls_until is not None and now >= self._controls_until:
            self.show_controls, self._controls_until, self._dirty = False, None, True
        if now - self._hud_time >= HUD_REFRESH_S:
            self._hud_time = now
            lines = hud_lines(self.hud_info())
            self._dirty |= self.show_hud and lines != self._hud
            self._hud = lines
        if fresh or self._dirty:
            self.draw()
            if self._screenshot:
                self._screenshot = False
                self.save_screenshot()
            self.window.flip()
            self._dirty = False
            if fresh and not tick.is_prompt:
                latency = (time.perf_counter() - tick.input_time) * 1000
                self.latency_ms = latency if self.latency_ms is None else 0.8 * self.latency_ms + 0.2 * latency
        return True

    @staticmethod
    def _events(wait_ms: int) -> list[pygame.event.Event]:
        """Pending events, waiting up to `wait_ms` for the first (pygame releases the GIL meanwhile)."""
        if wait_ms <= 0:
            return pygame.event.get()
        first = pygame.event.wait(wait_ms)
        if first.type == pygame.NOEVENT:
            return []
        return [first, *pygame.event.get()]

    def _command(self, command: Command) -> bool:
        if command is Command.QUIT:
            return False
        if command is Command.PAUSE:
            paused = not self.source.paused
            self.source.set_paused(paused)
            self.handler.paused = paused
        elif command is Command.STEP:
            self.source.request_step()
        elif command is Command.RESET:
            self.source.request_reset()
        elif command is Command.HUD:
            self.show_hud = not self.show_hud
        elif command is Command.CONTROLS:
            self.show_controls = not self.show_controls
            self._controls_until = None
        elif command is Command.FULLSCREEN:
            self.window.toggle_fullscreen()
        elif command is Command.RECORD:
            if self.recorder is None:
                print("nothing to record: --view shows a recording that already exists")
            else:
                self.recorder.toggle()
        elif command is Command.SCREENSHOT:
            self._screenshot = True
        self._hud_time = 0.0
        self._dirty = True
        return True

    def hud_info(self) -> HudInfo:
        tick = self.shown
        statuses = []
        if self.source.paused:
            statuses.append("PAUSED: e steps, . resumes")
        if self.handler.capture_mouse and not self.handler.grabbed:
            statuses.append("mouse free: click the window to look around")
        if self.recorder is not None and self.recorder.error:
            statuses.append(self.recorder.error)
        if (extra := self.status()) is not None:
            statuses.append(extra)
        return dataclasses.replace(
            self.info, model_fps=self.source.ticks_per_second(),
            stages_ms=tick.stages_ms if tick is not None else {}, latency_ms=self.latency_ms,
            frame=self.position(tick) if tick is not None else "",
            action=self.describe(tick.action) if tick is not None and tick.action is not None else None,
            recording_s=self.recorder.seconds() if self.recorder is not None else None,
            pose=tick.pose if tick is not None else None, status=" | ".join(statuses) or None,
            world_items=tick.hud_items if tick is not None else ())

    def _overlay(self, name: str, lines: list[Line], size: int):
        """The RGBA image for an overlay when its text changed, else None (the uploaded one is reused)."""
        key = (tuple(lines), size)
        if self._uploaded.get(name) == key:
            return None
        self._uploaded[name] = key
        return self.text.render(lines, size)

    def fitted_size(self, lines: list[Line], size: tuple[int, int]) -> int:
        """The window's text size, smaller where these lines would not fit inside the window."""
        text_size = font_size(size[1])
        while text_size > 8:
            width, height = self.text.measure(lines, text_size)
            if width <= FIT * size[0] and height <= FIT * size[1]:
                break
            text_size -= 1
        return text_size

    def draw(self) -> None:
        size = self.window.size
        self.frame_rect = self.renderer.draw_frame(size)
        text_size = self.fitted_size(self._hud, size) if self._hud else font_size(size[1])
        if self.show_hud and self._hud:
            self.renderer.draw_overlay("hud", self._overlay("hud", self._hud, text_size), (MARGIN, MARGIN), size)
            tick = self.shown
            if tick is not None and tick.hud_images:
                key = ("thumbnails", tick.count, text_size)
                image = None
                if self._uploaded.get("thumbnails") != key:
                    self._uploaded["thumbnails"] = key
                    image = thumbnails_panel(tick.hud_images, 4 * text_size)
                below = MARGIN + self.renderer.overlay_size("hud")[1] + MARGIN // 2
                self.renderer.draw_overlay("thumbnails", image, (MARGIN, below), size)
        if self.show_controls:
            image = self._overlay("controls", self.controls, self.fitted_size(self.controls, size))
            width, height = self.renderer.overlay_size("controls") if image is None else image.shape[1::-1]
            position = (max(MARGIN, size[0] - width - MARGIN), max(MARGIN, size[1] - height - MARGIN))
            self.renderer.draw_overlay("controls", image, position, size)

    def save_screenshot(self) -> Path:
        """The drawn window (before the flip) as a PNG under the recordings folder."""
        self.screenshot_dir.mkdir(parents=True, exist_ok=True)
        path = self.screenshot_dir / time.strftime("screenshot-%Y%m%d-%H%M%S.png")
        Image.fromarray(self.renderer.read_screen(self.window.size)).save(path)
        print(f"saved {path}")
        return path


def _window_settings(args: argparse.Namespace, world_cfg) -> tuple[tuple[int, int], str]:
    """Window size and filter: command line first, then the world config's `player` section."""
    player_cfg = world_cfg.get("player", {}) if world_cfg is not None else {}
    size = args.window_size or tuple(player_cfg.get("window_size", DEFAULT_WINDOW))
    return (int(size[0]), int(size[1])), args.filter or str(player_cfg.get("filter", "bilinear"))


def _wait_with_window(window: Window, renderer: Renderer, message: str, work: Callable[[], T]) -> T:
    """Run slow work (loading weights) on a thread while the window stays responsive and says why."""
    result: dict[str, object] = {}

    def target() -> None:
        try:
            result["value"] = work()
        except BaseException as exc:  # re-raised below, on the window thread
            result["error"] = exc

    thread = threading.Thread(target=target, name="loading", daemon=True)
    thread.start()
    panel = TextPanel().render([(message, (235, 235, 235))], font_size(window.size[1]))
    while thread.is_alive():
        for event in pygame.event.get():
            if event.type == pygame.QUIT or (event.type == pygame.KEYDOWN and pygame.key.name(event.key) == "q"):
                raise SystemExit(0)
        size = window.size
        renderer.draw_frame(size)
        renderer.draw_overlay("loading", panel, (MARGIN, MARGIN), size)
        window.flip()
        thread.join(0.05)
    if "error" in result:
        raise result["error"]
    return result["value"]


def _checkpoint_hashes(session: Session) -> Callable[[], dict]:
    """sha256 of each checkpoint file, computed in the background from the start (multi-GB files take
    seconds); the returned function waits for it, which only the first recording ever does."""
    from engine.checkpoints.verify import files_sha256

    hashes: dict[str, str] = {}
    thread = threading.Thread(
        target=lambda: hashes.update(files_sha256(session.checkpoint_files)),
        name="sha256", daemon=True)
    thread.start()

    def get() -> dict:
        thread.join()
        return dict(hashes)

    return get


def _open_model(args: argparse.Namespace, window: Window, renderer: Renderer, world: str,
                replay_meta: dict | None) -> Session:
    settings = {"seed": args.seed, "steps": args.steps, "sampler": args.sampler}
    if replay_meta is not None:
        settings = {"seed": int(replay_meta.get("seed", args.seed)),
                    "steps": replay_meta.get("steps", args.steps),
                    "sampler": str(replay_meta.get("sampler", args.sampler))}
        print(f"replaying with the recording's seed {settings['seed']}, {settings['steps']} steps, "
              f"{settings['sampler']} sampler")
    def load() -> Session:
        session = open_session(str(args.config or args.world), device=args.device, dtype=args.dtype,
                               checkpoints=args.weights, prompt=args.prompt, allow_download=not args.offline,
                               overrides=world_overrides(args), extra=session_extras(args), **settings)
        return with_ground_truth(session, settings["seed"]) if args.side_by_side else session

    return _wait_with_window(window, renderer, f"loading {world}...", load)


def _viewer(args: argparse.Namespace, window: Window, renderer: Renderer, stack: ExitStack) -> Player:
    """`--view`: a recording's frames instead of a model; no mouse capture, nothing to record."""
    source = RecordingViewer(args.view)
    stack.callback(source.stop)
    meta = source.metadata
    recorded_in = f" (recorded in {meta['world']})" if "world" in meta else ""
    info = HudInfo(world=f"viewing {args.view.name}{recorded_in}", device=meta.get("device", "-"),
                   dtype=meta.get("dtype", "-"), backend=meta.get("backend", "-"), steps=meta.get("steps"))
    print(f"viewing {args.view}\n{controls_text([], PLAYBACK_CONTROLS)}")
    return Player(window, renderer, source, InputHandler(InputState(), capture_mouse=False), info=info,
                  position=lambda tick: source.position(),
                  status=lambda: "end of recording: Enter starts again" if source.finished else None,
                  recorder=None, controls=controls_lines([], PLAYBACK_CONTROLS),
                  screenshot_dir=args.recordings / "view", describe=_recorded_keymap_description(meta))


def player_controls(keymap: Keymap, replaying: bool) -> list[tuple[str, str]]:
    """The player's own controls to list: no mouse look where the world's keymap uses no mouse, or in a replay."""
    return PLAYBACK_CONTROLS if replaying or keymap.discrete else list(CONTROLS)


def _recorded_world(path: Path):
    """The world config a viewed recording was made in (for its window size and filter), when it is known."""
    from engine.recordings import read_recording

    try:
        return load_world_config(str(read_recording(path)["metadata"]["world"]))
    except (ConfigError, KeyError):
        return None


def _recorded_keymap_description(meta: dict) -> Callable[[Sequence[float]], str | None]:
    """Actions of a viewed recording in words, by the keymap it was played with (when it names a loadable one)."""
    try:
        return Keymap.load(meta["keymap"]).describe
    except (KeyError, ConfigError):
        return lambda action: None


def _model_player(args: argparse.Namespace, window: Window, renderer: Renderer, stack: ExitStack, world: str,
                  keymap: Keymap, replay: ReplayPlan | None) -> Player:
    """Play (input -> keymap -> model) or `--replay` (a recording's actions -> model)."""
    session = _open_model(args, window, renderer, world, replay.metadata if replay else None)
    leave_core_for_io(session.device)
    meta = session.metadata()
    hashes = _checkpoint_hashes(session)
    state = InputState()
    mouse = not keymap.discrete
    shown_controls = player_controls(keymap, replay is not None)
    if replay is None:
        next_action, listeners = live_actions(state, keymap, args.mouse_sensitivity), []
        rows, shadowed = game_controls(keymap)
    else:
        replay_source = ReplaySource(replay)
        next_action, listeners = replay_source.next_action, [replay_source]
        rows, shadowed = [], []
        stack.callback(lambda: print(replay_source.summary()))
    loop = InferenceLoop(session, next_action, fps=session.fps if args.fps is None else args.fps,
                         listeners=listeners)
    recorder = Recorder(
        args.recordings, session.world, session.fps, history=loop.actions_since_reset,
        max_bytes=args.record_max_mb * 2**20 if args.record_max_mb else None,
        metadata=lambda: meta | {"checkpoint_sha256": hashes(), "keymap": keymap.source,
                                 "mouse_sensitivity": args.mouse_sensitivity, "replay_of": str(args.replay or "")})
    loop.listeners.append(recorder)
    stack.callback(recorder.close)
    stack.callback(loop.stop)
    if args.record:
        recorder.start()
    info = HudInfo(world=session.world, device=str(session.device), dtype=meta["dtype"],
                   backend=meta.get("backend", "eager"), steps=session.steps)
    if replay is None:
        position, status = (lambda tick: f"frame {tick.frame_index}"), (lambda: None)
    else:
        position, status = ((lambda tick: replay_source.position()),
                            (lambda: replay_source.summary() if loop.finished else None))
    player = Player(window, renderer, loop, InputHandler(state, capture_mouse=replay is None and mouse), info=info,
                    position=position, status=status, recorder=recorder,
                    controls=controls_lines(rows, shown_controls),
                    screenshot_dir=args.recordings / session.world, describe=keymap.describe)
    print(f"{session.world} on {session.device} ({meta['dtype']}), {session.steps} steps\n"
          f"{controls_text(rows, shown_controls)}")
    for key in shadowed:
        print(f"note: key {key} is a player control here; rebind it in a keymap (--keymap) to use it")
    loop.start()
    return player


@contextmanager
def open_player(args: argparse.Namespace) -> Iterator[Player]:
    """Window, session or recording, threads: everything `run_player` runs, closed again on exit
    (the open recording is finalised, whatever ends the loop). Config errors surface before the
    window opens or any weights load."""
    if args.view:
        world_cfg, keymap, replay = _recorded_world(args.view), None, None
    else:
        world_cfg = load_world_config(str(args.config or args.world), world_overrides(args))
        keymap = Keymap.load(args.keymap or world_cfg.actions.keymap, world_cfg.actions.get("space"))
        replay = load_replay(args.replay) if args.replay else None
        if replay is not None and replay.metadata.get("world") != world_cfg.name:
            raise ConfigError(f"{args.replay} was recorded in world '{replay.metadata.get('world')}', not "
                              f"'{world_cfg.name}': pass --world or --config for that world")
    size, filter_name = _window_settings(args, world_cfg)
    title = f"{args.view.name if args.view else world_cfg.name} · neural game engine"
    with ExitStack() as stack:
        window = stack.enter_context(Window(size, title, fullscreen=args.fullscreen))
        renderer = Renderer(window.ctx, filter_name)
        if args.view:
            yield _viewer(args, window, renderer, stack)
        else:
            yield _model_player(args, window, renderer, stack, world_cfg.name, keymap, replay)


def run_player(args: argparse.Namespace) -> None:
    restore = install_signal_finalizers()
    try:
        with open_player(args) as player:
            player.run()
    finally:
        restore()
