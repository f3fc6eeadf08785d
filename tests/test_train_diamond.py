"""The tiny DIAMOND config trains the EDM denoiser on real Breakout frames (loss clearly falls), its checkpoint
plays in the atari world, and the loss rolls the conditioning frames forward as the reference does."""

from __future__ import annotations

import numpy as np
import torch
from safetensors.torch import load_file

from engine.core.loader import open_session
from engine.families.diamond import atari
from engine.families.diamond.denoiser import quantize
from engine.families.diamond.loss import DiamondDenoising, SigmaDistribution
from engine.train.config import load_train_config
from engine.train.rng import BatchRandom
from engine.train.trainer import train
from tests.train_support import atari_data


def test_diamond_tiny_loss_falls_and_checkpoint_plays(tmp_path):
    steps = 100
    data = atari_data(tmp_path / "data")
    cfg = load_train_config("diamond_tiny", [f"data.paths=[{data}]", f"output_dir={tmp_path / 'run'}",
                                             f"train.steps={steps}", "train.checkpoint_every=50",
                                             "train.progress=false"])
    result = train(cfg)
    losses = np.array(result.losses)
    first, last = losses[:20].mean(), losses[-20:].mean()
    print(f"diamond_tiny loss: first 20 steps {first:.4f}, last 20 steps {last:.4f}")
    assert np.isfinite(losses).all() and last < 0.5 * first

    ema = load_file(result.checkpoint / "ema.safetensors")
    assert {key.split(".")[0] for key in ema} == {"denoiser", "rew_end_model", "actor_critic"}
    session = open_session(result.world, device="cpu", allow_download=False)
    for name, value in session.denoiser.state_dict().items():
        assert torch.equal(value, ema[f"denoiser.{name}"]), name
    for _ in range(3):
        frame = session.step(torch.eye(session.action_dim)[1]).frame
    assert frame.shape == (32, 32, 3) and frame.dtype == torch.uint8
    assert not session.episode.reset_on_end, "its reward/end model is untrained: it must not end episodes"


def test_rollout_conditions_later_steps_on_quantized_predictions():
    torch.manual_seed(0)
    inner = {"img_channels": 3, "num_steps_conditioning": 2, "cond_channels": 8, "depths": [1, 1],
             "channels": [4, 8], "attn_depths": [0, 0]}
    denoiser = atari.NETWORKS["denoiser"](game="Breakout", sigma_data=0.5, sigma_offset_noise=0.3, inner_model=inner)
    module = DiamondDenoising(denoiser, SigmaDistribution(), {})
    calls = []
    original = denoiser.model_output

    def spy(noisy, cs, obs, act, sigma_cond=None):
        output = original(noisy, cs, obs, act, sigma_cond)
        calls.append((noisy, cs, obs.clone(), output.detach()))
        return output

    denoiser.model_output = spy
    b, t = 3, 2 + 3
    batch = {"obs": torch.rand(b, t, 3, 8, 8) * 2 - 1, "act": torch.randint(0, 4, (b, t)),
             "mask_padding": torch.ones(b, t, dtype=torch.bool)}
    loss, _ = module(batch, BatchRandom(0, 0, range(b)))
    assert len(calls) == 3 and torch.isfinite(loss)
    for step in range(1, 3):
        noisy, cs, _, output = calls[step - 1]
        predicted = quantize(cs.c_skip * noisy + cs.c_out * output)
        conditioning = calls[step][2].reshape(b, 2, 3, 8, 8)
        assert torch.equal(conditioning[:, -1], predicted)
        assert not torch.equal(conditioning[:, -1], batch["obs"][:, 2 + step - 1])
    assert torch.equal(calls[0][2].reshape(b, 2, 3, 8, 8), batch["obs"][:, :2])
