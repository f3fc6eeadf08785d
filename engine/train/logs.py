"""Run logs of the main process: `metrics.jsonl` (one line per step), TensorBoard scalars, and the loss plot.

On resume, entries after the checkpoint's step are dropped (they were computed after the state that is
restored), so the logs of a killed-and-resumed run read like those of an uninterrupted one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from engine.errors import EngineError
from engine.train.plot import plot_loss

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss.png"
TENSORBOARD_DIR = "tensorboard"


def read_metrics(run_dir: Path) -> list[dict]:
    """The logged steps, each `{"step": N, "loss": ..., ...}`; a damaged log is a one-line error naming its line."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise EngineError(f"training log {path} is not readable text ({exc}): delete it to start the log "
                          "afresh") from None
    entries = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EngineError(f"training log {path}:{number} is not JSON ({exc.msg}): delete the line or the "
                              "file") from None
        if not isinstance(entry, dict) or isinstance(entry.get("step"), bool) or not isinstance(entry.get("step"), int):
            raise EngineError(f"training log {path}:{number} has no integer 'step': delete the line or the file")
        entries.append(entry)
    return entries


class RunLog:
    def __init__(self, run_dir: Path, resumed_step: int) -> None:
        try:
            import matplotlib  # noqa: F401  (the loss plot; imported here to fail before training starts)
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise EngineError(f"training logs need {exc.name}: pip install -e '.[train]'") from None

        self.run_dir = run_dir
        self.path = run_dir / METRICS_FILE
        kept = [entry for entry in read_metrics(run_dir) if entry["step"] <= resumed_step]
        self.path.write_text("".join(json.dumps(entry) + "\n" for entry in kept))
        self.file = self.path.open("a")
        self.writer = SummaryWriter(str(run_dir / TENSORBOARD_DIR), purge_step=resumed_step + 1)

    def log(self, step: int, values: Mapping[str, float]) -> None:
        self.file.write(json.dumps({"step": step, **values}) + "\n")
        self.file.flush()
        for key, value in values.items():
            self.writer.add_scalar(f"train/{key}", value, step)

    def plot(self) -> Path:
        self.writer.flush()
        return plot_loss(read_metrics(self.run_dir), self.run_dir / PLOT_FILE)

    def close(self) -> None:
        self.file.close()
        self.writer.close()
