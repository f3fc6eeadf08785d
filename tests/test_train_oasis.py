"""The tiny Oasis config trains on panorama recordings (loss clearly falls) and its checkpoint plays."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from engine.train.__main__ import main
from engine.train.config import load_train_config
from engine.train.recipes import build_recipe
from engine.train.trainer import autocast_context, train
from tests.train_support import assert_plays_ema_weights, oasis_overrides, panorama_data


def test_oasis_tiny_loss_falls_and_checkpoint_plays(tmp_path, oasis_dir):
    steps = 120
    data = panorama_data(tmp_path / "data", oasis_dir)
    overrides = oasis_overrides(data, tmp_path / "run", oasis_dir, steps, every=60)
    result = train(load_train_config("oasis_tiny", overrides))

    losses = np.array(result.losses)
    assert len(losses) == steps and np.isfinite(losses).all()
    first, last = losses[:20].mean(), losses[-20:].mean()
    print(f"oasis_tiny loss: first 20 steps {first:.4f}, last 20 steps {last:.4f}")
    assert last < 0.5 * first

    run = result.run_dir
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in logged] == list(range(1, steps + 1))
    assert np.allclose([entry["loss"] for entry in logged], losses)
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert result.checkpoint.name == f"step_{steps:06d}"
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*")) == ["step_000060", "step_000120"]

    assert_plays_ema_weights(result.world, result.checkpoint, "dit", "dit.", ticks=3)

    # init.dit starts a new run from these weights (our checkpoints carry the `dit.` prefix)
    ema = load_file(result.checkpoint / "ema.safetensors")
    again = build_recipe(load_train_config("oasis_tiny", [*overrides, f"init.dit={result.checkpoint / 'ema.safetensors'}"]),
                         torch.device("cpu"))
    assert all(torch.equal(value, ema[f"dit.{name}"]) for name, value in again.model.dit.state_dict().items()
               if f"dit.{name}" in ema)


def test_unknown_config_is_one_line_error(capsys):
    assert main(["--config", "no_such_config"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown training config 'no_such_config'") and "oasis_tiny" in err
    assert "\n" not in err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: bf16 autocast and nccl run only there")
def test_oasis_tiny_trains_under_bf16_autocast_on_cuda(tmp_path, oasis_dir):
    data = panorama_data(tmp_path / "data", oasis_dir, frames=30)
    cfg = load_train_config("oasis_tiny", [*oasis_overrides(data, tmp_path / "run", oasis_dir, steps=6, every=6),
                                           "train.device=cuda", "train.precision=bf16"])
    with autocast_context(cfg, torch.device("cuda")):
        assert torch.is_autocast_enabled("cuda") and torch.get_autocast_dtype("cuda") == torch.bfloat16
    result = train(cfg)
    assert np.isfinite(result.losses).all()
    assert all(t.dtype == torch.float32 for t in load_file(result.checkpoint / "ema.safetensors").values())
