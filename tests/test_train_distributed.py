"""Two processes (torchrun, gloo on CPU) with half the batch each end with the parameters of one process
with the whole batch: DDP here, FSDP in test_train_fsdp.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine.train.config import load_train_config
from engine.train.trainer import TrainResult, train
from tests.train_support import oasis_overrides, panorama_data, run_training

STEPS = 8


@pytest.fixture(scope="module")
def single_process(tmp_path_factory, oasis_dir) -> tuple[Path, TrainResult]:
    folder = tmp_path_factory.mktemp("single")
    data = panorama_data(folder / "data", oasis_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(load_train_config("oasis_tiny", oasis_overrides(data, folder / "run", oasis_dir, STEPS, STEPS)))
    finally:
        torch.set_num_threads(threads)
    return data, result


def compare_with_two_processes(strategy: str, single: tuple[Path, TrainResult], run: Path, oasis_dir: Path) -> None:
    data, reference = single
    out = run_training("oasis_tiny", [*oasis_overrides(data, run, oasis_dir, STEPS, STEPS),
                                      f"distributed.strategy={strategy}"], processes=2)
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["steps"] == STEPS
    for name in ("model.safetensors", "ema.safetensors"):
        one = load_file(reference.checkpoint / name)
        two = load_file(run / "checkpoints" / f"step_{STEPS:06d}" / name)
        assert one.keys() == two.keys()
        worst = max((one[k] - two[k]).abs().max().item() for k in one)
        print(f"{strategy} {name}: max |1 process - 2 processes| = {worst:.3g}")
        assert worst < 1e-5, (name, worst)
    logged = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert logged == pytest.approx(reference.losses, rel=1e-5)


def test_ddp_two_processes_match_one(single_process, tmp_path, oasis_dir):
    compare_with_two_processes("ddp", single_process, tmp_path / "ddp", oasis_dir)
