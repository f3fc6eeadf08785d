"""Kill-and-resume: a run killed (SIGKILL) after a checkpoint and resumed gives the same loss sequence and
the same weights as an uninterrupted run."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from engine.train.checkpoint import LATEST
from engine.train.config import load_train_config
from engine.train.trainer import train
from tests.conftest import PROJECT_ROOT
from tests.train_support import oasis_overrides, panorama_data, single_thread_env, train_command

STEPS, EVERY, KILL_AFTER = 40, 10, 20


def losses(run: Path) -> list[tuple[int, float]]:
    return [(e["step"], e["loss"]) for e in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


def kill_after_checkpoint(overrides: list[str], run: Path, step: int, timeout: float = 120) -> str:
    """Start a training process, SIGKILL it as soon as its checkpoint of `step` (or later) is complete."""
    process = subprocess.Popen(train_command("oasis_tiny", overrides), cwd=PROJECT_ROOT, env=single_thread_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    pointer = run / "checkpoints" / LATEST
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if pointer.is_file() and pointer.read_text() >= f"step_{step:06d}":
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
        returncode = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert returncode == -signal.SIGKILL, process.stderr.read()[-2000:]
    return pointer.read_text()


def test_kill_and_resume_matches_uninterrupted_run(tmp_path, oasis_dir):
    data = panorama_data(tmp_path / "data", oasis_dir)
    killed_run, straight_run = tmp_path / "killed", tmp_path / "straight"
    killed = oasis_overrides(data, killed_run, oasis_dir, STEPS, EVERY)
    reached = kill_after_checkpoint(killed, killed_run, KILL_AFTER)
    assert reached < f"step_{STEPS:06d}", "the process finished before it could be killed"

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the killed process ran (OMP_NUM_THREADS=1), so the arithmetic is identical
    try:
        resumed = train(load_train_config("oasis_tiny", killed))
        straight = train(load_train_config("oasis_tiny", oasis_overrides(data, straight_run, oasis_dir, STEPS, EVERY)))
    finally:
        torch.set_num_threads(threads)

    assert resumed.start_step == int(reached.removeprefix("step_")) and straight.start_step == 0
    assert [s for s, _ in losses(killed_run)] == list(range(1, STEPS + 1))
    assert losses(killed_run) == losses(straight_run)
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = load_file(resumed.checkpoint / name), load_file(straight.checkpoint / name)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
