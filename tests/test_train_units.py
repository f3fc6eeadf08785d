"""Trainer pieces: learning-rate schedule, EMA, step batches, per-sample draws, config loading."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from engine.errors import ConfigError
from engine.families.diamond import atari
from engine.families.doom.network import DoomWorldModel
from engine.families.oasis.dit import OasisDiT
from engine.families.oasis.recipe import dit_kwargs
from engine.families.oasis.vae import OasisVAE
from engine.families.worldmar.model import WorldMAR
from engine.train.batches import EpochDataset, StepBatches
from engine.train.config import available_configs, load_train_config
from engine.train.ema import EMA
from engine.train.rng import BatchRandom
from engine.train.schedule import warmup_cosine_factor
from engine.train.trainer import autocast_context


def test_warmup_then_cosine_to_floor():
    factors = [warmup_cosine_factor(s, warmup_steps=10, total_steps=110, min_ratio=0.1) for s in range(130)]
    assert factors[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert factors[10] == pytest.approx(1.0)
    assert factors[60] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert all(a >= b for a, b in itertools.pairwise(factors[10:]))
    assert factors[110:] == pytest.approx([0.1] * 20)


def test_ema_follows_parameters_with_warmup_decay():
    model = nn.Linear(3, 2)
    ema = EMA(model, decay=0.9)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)  # first update: decay min(0.9, 1/10) = 0.1
    assert torch.allclose(ema.parameters()["weight"], 0.1 * start + 0.9 * (start + 1))
    for _ in range(100):
        ema.update(model)
    assert ema.current_decay() == 0.9
    assert torch.allclose(ema.parameters()["weight"], model.weight, atol=1e-4)


def test_step_batches_are_split_exactly_and_resume_mid_epoch():
    size, batch, steps = 50, 8, 13  # 6 steps per epoch: step 6 starts epoch 1
    whole = list(StepBatches(size, batch, seed=3, start_step=0, stop_step=steps))
    halves = [list(StepBatches(size, batch, 3, 0, steps, rank=r, world_size=2)) for r in range(2)]
    assert [a + b for a, b in zip(*halves, strict=True)] == whole
    assert list(StepBatches(size, batch, 3, start_step=5, stop_step=steps)) == whole[5:]
    assert {e for e, _ in whole[5]} == {0} and {e for e, _ in whole[6]} == {1}
    first_epoch = [i for step in whole[:6] for _, i in step]
    assert len(set(first_epoch)) == 48
    with pytest.raises(ConfigError, match="not divisible"):
        StepBatches(size, 7, 0, 0, 1, rank=0, world_size=2)


def test_epoch_dataset_sets_the_epoch_before_reading():
    class Recorder(torch.utils.data.Dataset):
        epoch = None

        def __len__(self):
            return 4

        def set_epoch(self, epoch):
            self.epoch = epoch

        def __getitem__(self, index):
            return {"epoch": torch.tensor(self.epoch), "index": torch.tensor(index)}

    wrapped = EpochDataset(Recorder())
    assert int(wrapped[(2, 1)]["epoch"]) == 2 and int(wrapped[(5, 3)]["epoch"]) == 5


def test_per_sample_draws_do_not_depend_on_the_split():
    whole = BatchRandom(seed=1, step=7, positions=range(4))
    halves = [BatchRandom(1, 7, range(0, 2)), BatchRandom(1, 7, range(2, 4))]
    assert torch.equal(whole.normal((3, 2)), torch.cat([h.normal((3, 2)) for h in halves]))
    assert torch.equal(whole.randint(10, (5,)), torch.cat([h.randint(10, (5,)) for h in halves]))
    other_step = BatchRandom(1, 8, range(4)).normal((3, 2))
    assert not torch.equal(BatchRandom(1, 7, range(4)).normal((3, 2)), other_step)
    assert whole.draw((4, 2), torch.device("cpu")).shape == (4, 2)


def test_config_by_name_with_overrides_and_errors(tmp_path):
    cfg = load_train_config("oasis_tiny", ["train.steps=7", "optim.lr=0.5"])
    assert cfg.name == "oasis_tiny" and cfg.train.steps == 7 and cfg.optim.lr == 0.5
    assert cfg.output_dir == "runs/oasis_tiny" and cfg.distributed.strategy == "ddp"
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_train_config("oasis_tiny", ["train.steps"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("family: pong\nmodel: {}\ndata: {}\n")
    with pytest.raises(ConfigError, match="family 'pong' is not one of"):
        load_train_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_train_config(tmp_path / "missing.yaml")


def test_precision_is_checked_and_autocast_only_on_cuda():
    with pytest.raises(ConfigError, match=r"train\.precision must be one of bf16, fp32, got 'fp8'"):
        load_train_config("oasis_tiny", ["train.precision=fp8"])
    cfg = load_train_config("oasis_tiny")
    cfg.train.precision = "fp8"
    with pytest.raises(ConfigError, match=r"train\.precision 'fp8'"):
        autocast_context(cfg, torch.device("cpu"))
    with autocast_context(load_train_config("oasis_tiny"), torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize("name", available_configs())
def test_every_config_loads_and_its_networks_build(name):
    """Each shipped config resolves and its network sizes are valid (built on the meta device, no memory)."""
    cfg = load_train_config(name)
    model = OmegaConf.to_container(cfg.model, resolve=True)
    with torch.device("meta"):
        if cfg.family == "oasis":
            OasisVAE(**model["vae"])
            OasisDiT(**dit_kwargs(cfg, model["vae"]))
        elif cfg.family == "oasis_vae":
            OasisVAE(**model["vae"])
        elif cfg.family == "diamond":
            for role in ("denoiser", "rew_end_model", "actor_critic"):
                atari.NETWORKS[role](**model[role])
        elif cfg.family == "doom":
            DoomWorldModel(**model["world_model"])
        else:
            WorldMAR(**model["worldmar"])
            OasisVAE(**model["vae"])
    assert cfg.train.batch_size > 0 and cfg.train.steps > 0
