"""Recording runs killed at random (seeded) moments: SIGTERM, SIGKILL then `recover`, and a double Ctrl+C,
for `--headless` and for the player (`--record`, under Xvfb).

After every run the pair must be readable and agree: the mp4 decodes to as many frames as the npz holds,
the npz holds at least every frame the run's ffmpeg got, and its frames are exactly the ones the model
produces (a prefix of the run's deterministic frame sequence).

Each run is a real process running `launcher.main` that gets a real signal. To fit dozens of runs into
seconds they are forked from one server process that imported the engine once (a fresh interpreter spends
~2 s importing torch and the world's modules); what runs after the fork is the program itself, its signal
handlers and atexit hooks included. The server also sends the signals, so a process that has already been reaped (whose pid
could be reused) is never signalled.
"""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from app.headless import idle_actions
from engine.core.loader import open_session
from engine.errors import ConfigError
from engine.recordings import read_recording, recover_segment
from engine.recordings.recovery import mp4_frames
from engine.recordings.spool import VIDEO, try_lock
from tests.conftest import PROJECT_ROOT
from tests.test_app_recording import mp4_frames as decode_mp4
from tests.test_app_support import psnr
from tests.test_recording import spool_rows

RUNS = 24  # per program: SIGTERM and SIGKILL 10 times each, a double Ctrl+C 4 times
KINDS = ["TERM"] * 10 + ["KILL"] * 10 + ["INT2"] * 4
HEADLESS_FRAMES = 240
WINDOW_S = 0.6  # signals land up to this long after the first frame reached the disk

SERVER = textwrap.dedent("""
    import gc, json, os, select, sys
    import launcher, app.headless, app.player, engine.core.prompt, engine.core.spawn, engine.families.oasis.world
    from engine.recordings import __main__ as recordings_cli

    gc.freeze()  # the children's garbage collector leaves the inherited modules alone

    MAINS = {"launcher": launcher.main, "recordings": recordings_cli.main}

    def run(request):
        os.chdir(request["cwd"])
        os.environ.update(request.get("env", {}))
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        sys.exit(MAINS[request["main"]](request["argv"]))

    child, pending = None, b""
    while True:
        if child is not None:
            done, status = os.waitpid(child, os.WNOHANG)
            if done:
                child = None
                print(json.dumps({"exit": os.waitstatus_to_exitcode(status)}), flush=True)
        if select.select([0], [], [], 0.005)[0]:
            data = os.read(0, 65536)
            if not data:  # the test is over: a run it left behind goes with it
                if child is not None:
                    os.kill(child, 9)
                    os.waitpid(child, 0)
                break
            pending += data
        while b"\\n" in pending:
            line, pending = pending.split(b"\\n", 1)
            request = json.loads(line)
            if "signal" in request:
                if child is not None:
                    os.kill(child, request["signal"])
                continue
            sys.stdout.flush()
            child = os.fork()
            if child == 0:
                run(request)
            print(json.dumps({"pid": child}), flush=True)
""")


class ForkServer:
    """One run at a time: `start` it, `send` it signals, `wait` for its exit code."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": "1", "PYGAME_HIDE_SUPPORT_PROMPT": "1"}
        self._proc = subprocess.Popen([sys.executable, "-c", SERVER], cwd=PROJECT_ROOT, env=env,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._replies: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self._proc.stdout:
            self._replies.put(json.loads(line))
        self._replies.put({"exit": "server gone"})

    def _request(self, request: dict) -> None:
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()

    def start(self, main: str, argv: list[str], cwd: Path, log: Path) -> None:
        self._request({"main": main, "argv": argv, "cwd": str(cwd), "log": str(log)})
        reply = self._replies.get(timeout=30)
        assert "pid" in reply, reply

    def send(self, signum: int) -> None:
        self._request({"signal": int(signum)})

    def exited(self) -> int | None:
        try:
            return self._replies.get_nowait()["exit"]
        except queue.Empty:
            return None

    def wait(self, timeout: float = 120) -> int:
        try:
            return self._replies.get(timeout=timeout)["exit"]
        except queue.Empty:
            self.send(signal.SIGKILL)
            raise AssertionError(f"the run did not end within {timeout} s") from None

    def close(self) -> None:
        self._proc.stdin.close()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


class Reference:
    """The frames the tiny world produces from launch with no input: prompt, then one frame per idle tick."""

    def __init__(self, world: Path) -> None:
        self.session = open_session(str(world), device="cpu", seed=0)
        self.idle = idle_actions(self.session.cfg, 1, self.session.action_dim)[0]
        self.frames = [self.session.prompt_frames()[0].numpy()]

    def upto(self, count: int) -> np.ndarray:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny steps: a second thread only waits for a busy core
        try:
            while len(self.frames) < count:
                self.frames.append(self.session.step(self.idle).frame.numpy())
        finally:
            torch.set_num_threads(threads)
        return np.stack(self.frames[:count])


@pytest.fixture(scope="module")
def server(display):
    forks = ForkServer()
    yield forks
    forks.close()


@pytest.fixture(scope="module")
def reference(world) -> Reference:
    return Reference(world)


def _kill_at_random(server: ForkServer, rng: random.Random, kind: str, started: Callable[[], bool],
                    most: float) -> int:
    """Wait until the run records, then signal it after a random delay; returns its exit code."""
    deadline = time.monotonic() + 60
    while not started():
        code = server.exited()
        if code is not None:
            return code
        assert time.monotonic() < deadline, "the run recorded nothing within 60 s"
        time.sleep(0.005)
    time.sleep(rng.uniform(0, most))
    if kind == "KILL":
        server.send(signal.SIGKILL)
    elif kind == "TERM":
        server.send(signal.SIGTERM)
    else:  # a double Ctrl+C: the second one lands while the first is finalising
        server.send(signal.SIGINT)
        time.sleep(rng.uniform(0, 0.05))
        server.send(signal.SIGINT)
    return server.wait()


def _finish(server: ForkServer, stem: Path, kind: str, tmp: Path, stats: dict) -> None:
    """After a SIGKILL: wait for the run's ffmpeg, count what it encoded, then recover (CLI or function)."""
    spool = stem.with_name(stem.name + ".spool")
    if not spool.is_dir():
        return
    assert kind == "KILL", f"{kind}: the spool {spool} was left behind"
    lock = try_lock(spool, wait=30)
    assert lock is not None, "the killed run's ffmpeg did not finish within 30 s"
    os.close(lock)
    encoded = mp4_frames(spool / VIDEO) or 0
    if len(stats["encoded"]) % 4 == 0:  # the command line (forked like the runs), else recover_segment
        log = tmp / f"recover-{stem.name}.log"
        server.start("recordings", ["recover", str(stem)], PROJECT_ROOT, log)
        code, text = server.wait(), log.read_text()
        assert code == 0 or (code == 2 and "no frame was written" in text and encoded == 0), text
        assert code == 2 or f"recovered {stem}.mp4 and {stem.name}.npz" in text, text
    else:
        try:
            recover_segment(stem)
        except ConfigError as exc:
            assert "no frame was written" in str(exc) and encoded == 0, exc
    assert not spool.exists()
    stats["encoded"].append(encoded)
    npz = stem.with_name(stem.name + ".npz")
    stats["spooled"].append(len(read_recording(npz)["frames"]) if npz.exists() else 0)
    assert stats["spooled"][-1] >= encoded, "the npz holds every frame ffmpeg got"


def _check_pair(stem: Path, reference: Reference, first: int, idle: np.ndarray) -> int:
    """The finished pair of `stem` agrees and holds the model's frames from `first` on; returns the count."""
    data = read_recording(stem.with_name(stem.name + ".npz"))
    count = len(data["frames"])
    video = decode_mp4(stem.with_name(stem.name + ".mp4"))
    assert len(video) == count, f"{stem}: mp4 has {len(video)} frames, npz {count}"
    np.testing.assert_array_equal(data["frames"], reference.upto(first + count)[first:])
    assert (data["actions"] == idle).all()
    assert data["metadata"]["num_frames"] == count
    assert min(psnr(a, b) for a, b in zip(video, data["frames"], strict=True)) > 35
    return count


def _report(name: str, results: list[tuple[str, int, int]], stats: dict) -> None:
    kept = {kind: [frames for k, _, frames in results if k == kind] for kind in dict.fromkeys(KINDS)}
    codes = sorted({(kind, code) for kind, code, _ in results})
    reencoded = sum(e < s for e, s in zip(stats["encoded"], stats["spooled"], strict=True))
    print(f"\n{name}: {len(results)} runs, exit codes {codes}; frames kept per kind: {kept}; after SIGKILL "
          f"ffmpeg had encoded {stats['encoded']} of the spooled {stats['spooled']} frames "
          f"({reencoded} mp4s re-encoded from the npz)")


def test_headless_runs_killed_at_random_moments(server, reference, world, tmp_path):
    rng = random.Random(20260101)
    kinds = rng.sample(KINDS, len(KINDS))
    results, stats = [], {"encoded": [], "spooled": []}
    for number, kind in enumerate(kinds):
        out = tmp_path / f"run{number}.mp4"
        log = tmp_path / f"run{number}.log"
        server.start("launcher", ["--config", str(world), "--headless", "--device", "cpu",
                                  "--frames", str(HEADLESS_FRAMES), "--out", str(out)], tmp_path, log)
        stem = out.with_suffix("")
        code = _kill_at_random(server, rng, kind, lambda: spool_rows(stem.with_suffix(".spool")) > 0, WINDOW_S)  # noqa: B023
        text = log.read_text()
        assert "Traceback" not in text, text
        expected = {"TERM": 128 + signal.SIGTERM, "KILL": -signal.SIGKILL, "INT2": 130}[kind]
        assert code in (expected, 0), f"{kind} run {number}: exit {code}\n{text}"
        _finish(server, stem, kind, tmp_path, stats)
        if not out.exists():  # killed before its first frame reached the disk
            assert kind == "KILL" and not stem.with_suffix(".npz").exists()
            results.append((kind, code, 0))
            continue
        frames = _check_pair(stem, reference, 0, reference.idle.numpy())
        if code == 0:
            assert frames == HEADLESS_FRAMES
        results.append((kind, code, frames))
    _report("headless", results, stats)
    assert sum(code == 0 for _, code, _ in results) < len(results) // 4, "most runs must be cut short"


def test_player_runs_killed_at_random_moments(server, reference, world, tmp_path):
    rng = random.Random(20260102)
    kinds = rng.sample(KINDS, len(KINDS))
    results, stats = [], {"encoded": [], "spooled": []}
    for number, kind in enumerate(kinds):
        folder = tmp_path / f"rec{number}"
        segments = folder / "tiny-oasis"
        log = tmp_path / f"player{number}.log"
        server.start("launcher", ["--config", str(world), "--device", "cpu", "--record", "--recordings", str(folder),
                                  "--window-size", "240x160", "--fps", "0"], tmp_path, log)

        def started(segments=segments) -> bool:
            return any(spool_rows(spool) > 0 for spool in segments.glob("*.spool"))

        code = _kill_at_random(server, rng, kind, started, WINDOW_S)
        text = log.read_text()
        assert "Traceback" not in text, text
        expected = {"TERM": 128 + signal.SIGTERM, "KILL": -signal.SIGKILL, "INT2": 130}[kind]
        assert code == expected, f"{kind} run {number}: exit {code}\n{text}"
        stems = sorted({path.with_suffix("") for path in segments.iterdir()})
        assert len(stems) == 1, stems
        _finish(server, stems[0], kind, tmp_path, stats)
        if not stems[0].with_suffix(".npz").exists():
            results.append((kind, code, 0))
            continue
        if kind != "KILL":
            assert "recorded" in text, text
        results.append((kind, code, _check_pair(stems[0], reference, 1, reference.idle.numpy())))
    _report("player", results, stats)
