"""The tiny WorldMAR config trains on panorama recordings with pose-retrieved memory frames (loss clearly
falls), its checkpoint plays in the minecraft-mar world, and its training draws follow the model's own."""

from __future__ import annotations

import json

import numpy as np
import torch

from engine.families.worldmar.loss import training_draws
from engine.families.worldmar.model import WorldMAR
from engine.train.config import load_train_config
from engine.train.panorama import write_panorama_dataset
from engine.train.rng import BatchRandom
from engine.train.trainer import train
from tests.train_support import assert_plays_ema_weights


def test_worldmar_tiny_loss_falls_and_checkpoint_plays(tmp_path):
    steps = 80
    data = tmp_path / "data"
    write_panorama_dataset(data, episodes=2, frames=60, size=(72, 128), seed=0)
    cfg = load_train_config("worldmar_tiny", [f"data.paths=[{data}]", f"output_dir={tmp_path / 'run'}",
                                              f"train.steps={steps}", "train.checkpoint_every=40",
                                              "train.progress=false", "model.vae_weights=null"])  # a random VAE
    result = train(cfg)
    metrics = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    loss = np.array([m["loss"] for m in metrics])
    mse = np.array([m["mse"] for m in metrics])
    print(f"worldmar_tiny loss: first 20 steps {loss[:20].mean():.4f}, last 20 {loss[-20:].mean():.4f}; "
          f"mse {mse[:20].mean():.4f} -> {mse[-20:].mean():.4f}")
    assert np.isfinite(loss).all()
    assert loss[-20:].mean() < 0.75 * loss[:20].mean()
    assert mse[-20:].mean() < 0.7 * mse[:20].mean()

    assert_plays_ema_weights(result.world, result.checkpoint, "model", "worldmar.", ticks=2)


def test_training_draws_match_the_models_and_do_not_depend_on_the_split():
    model = WorldMAR(num_frames=4, num_prev_frames=3, num_mem_frames=1, st_embed_dim=16, encoder_depth=1,
                     decoder_depth=1, encoder_num_heads=2, decoder_num_heads=2, diffloss_w=16, diffloss_d=1,
                     num_sampling_steps="5", diffusion_batch_mul=3, proj_dropout=0.0, attn_dropout=0.0)
    reference = model.draw_training(4, "cpu", torch.Generator().manual_seed(0))
    whole = training_draws(model, BatchRandom(5, 2, range(4)))
    for name in ("pred_mask", "ctx_mask", "t", "noise"):
        assert getattr(whole, name).shape == getattr(reference, name).shape, name
        assert getattr(whole, name).dtype == getattr(reference, name).dtype, name
    hidden = whole.pred_mask.sum(dim=1)
    assert (hidden == hidden[0]).all() and 0.7 * 144 - 1 <= hidden[0] <= 144  # one masking rate per batch
    assert (whole.ctx_mask.sum(dim=-1) == int(hidden[0] * model.prev_masking_rate)).all()

    halves = [training_draws(model, BatchRandom(5, 2, range(0, 2))), training_draws(model, BatchRandom(5, 2, range(2, 4)))]
    assert torch.equal(whole.pred_mask, torch.cat([h.pred_mask for h in halves]))
    assert torch.equal(whole.ctx_mask, torch.cat([h.ctx_mask for h in halves]))
    for name in ("t", "noise"):  # rows ordered (repetition, sample, token)
        by_sample = [getattr(d, name).reshape(3, len(d.pred_mask), 144, -1) for d in (whole, *halves)]
        assert torch.equal(by_sample[0], torch.cat(by_sample[1:], dim=1)), name
