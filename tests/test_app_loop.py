"""The inference thread, the recorder and replay without a window: pacing, errors, segments split by
size and by reset, and exact replay of every part."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from app.inference import InferenceLoop
from app.recorder import Recorder
from app.replay import ReplaySource, load_replay
from engine.core.loader import open_session
from engine.recordings import read_recording
from tests.test_app_support import TickLog
from tests.tiny_world import make_tiny_oasis_world


@pytest.fixture(scope="module")
def session(tmp_path_factory, oasis_dir: Path):
    world = make_tiny_oasis_world(tmp_path_factory.mktemp("world"), oasis_dir)
    return open_session(str(world), device="cpu")


def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_ticks_are_paced_to_the_requested_rate(session):
    session.reset()
    log = TickLog()
    loop = InferenceLoop(session, lambda: (torch.zeros(session.action_dim), time.perf_counter()), fps=10,
                         listeners=[log]).start()
    try:
        wait_until(lambda: len(log.ticks) >= 6)
    finally:
        loop.stop()
    gaps = np.diff([tick.input_time for tick in log.ticks])  # the source is asked at each tick's start
    assert gaps.min() >= 0.1 - 1e-3, f"ticks started closer than 1/fps: {gaps}"


def test_an_error_on_the_inference_thread_is_kept_for_the_window_thread(session):
    session.reset()

    def broken():
        raise RuntimeError("keymap exploded")

    loop = InferenceLoop(session, broken).start()
    wait_until(lambda: loop.error is not None)
    loop.stop()
    assert str(loop.error) == "keymap exploded"


def test_split_and_reset_segments_each_replay_exactly(session, tmp_path):
    """Recording starts mid-play, is split by size into parts and cut by a reset; every part replays
    to the same frames from a fresh start."""
    session.reset()
    generator = torch.Generator().manual_seed(3)
    script = torch.rand((40, session.action_dim), generator=generator).round()
    script[:, 15:17] = torch.randint(-40, 41, (40, 2), generator=generator) / 40
    position = 0
    recorder: Recorder
    loop: InferenceLoop

    def scripted():
        nonlocal position
        if position == len(script):
            return None
        if position == 5:
            recorder.start()
        if position == 25:
            loop.request_reset()  # after this tick: ticks 26.. start again from the prompt
        position += 1
        return script[position - 1], time.perf_counter()

    loop = InferenceLoop(session, scripted)
    height, width = session.frame_size
    part_bytes = 8 * height * width * 3  # parts of about 8 frames, whatever the fixture VAE's frame size
    recorder = Recorder(tmp_path, session.world, session.fps, metadata=session.metadata,
                        history=loop.actions_since_reset, max_bytes=part_bytes, report=lambda message: None)
    loop.listeners.append(recorder)
    loop.start()
    wait_until(lambda: loop.finished)
    loop.stop()
    recorder.close()

    parts = sorted((tmp_path / session.world).glob("*.npz"))
    lengths = [len(read_recording(p)["frames"]) for p in parts]
    assert sum(lengths) == 35 and len(parts) >= 4, lengths
    for part in parts:
        plan = load_replay(part)
        session.reset()
        replay = ReplaySource(plan)
        loop = InferenceLoop(session, replay.next_action, listeners=[replay]).start()
        wait_until(lambda: loop.finished)  # noqa: B023
        loop.stop()
        assert replay.identical == replay.total == len(plan.frames), (part.name, replay.summary())
