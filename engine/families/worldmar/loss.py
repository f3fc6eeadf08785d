"""WorldMAR's training loss (nwrousell/world-mar `WorldMAR.forward`; Li et al. 2024, "Autoregressive Image
Generation without Vector Quantization"): hide a random share of the target frame's tokens (rate ~
truncnorm on [mask_ratio_min, 1]), drop some tokens of the previous frames, and train the per-token
diffusion head (IDDPM hybrid loss) on the hidden tokens only. The model computes the loss; this module
supplies its random draws.

The draws are the model's own (`draw_training`), made per sample from the step's per-sample generators,
so they do not depend on how the batch is split over processes; the masking rate stays one per global
batch, as the reference draws it.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.families.worldmar.masks import mask_from_orders, masked_counts, truncated_mask_rate
from engine.families.worldmar.model import TrainingDraws, WorldMAR
from engine.train.rng import BatchRandom


def training_draws(model: WorldMAR, rng: BatchRandom) -> TrainingDraws:
    """What `model.draw_training` draws, with each sample's rows from its own generator.

    Row order of `t` and `noise` follows the model's `.repeat(mul, 1)` of the flattened (batch, token) rows:
    row = r * B * n + b * n + j for repetition r, sample b, token j.
    """
    n, mul = model.frame_tokens, model.diffusion_batch_mul
    hidden, dropped = masked_counts(n, truncated_mask_rate(rng.shared_uniform(), model.mask_ratio_min),
                                    model.prev_masking_rate)
    pred = mask_from_orders(rng.uniform((n,)).argsort(dim=-1), hidden)
    ctx = None
    if model.num_prev_frames > 1:
        ctx = torch.stack([mask_from_orders(rng.uniform((n,)).argsort(dim=-1), dropped)
                           for _ in range(model.num_prev_frames - 1)], dim=1)
    steps = model.diffloss.train_diffusion.num_timesteps
    t = rng.randint(steps, (mul, n)).transpose(0, 1).flatten()
    noise = rng.normal((mul, n, model.token_dim)).transpose(0, 1).reshape(-1, model.token_dim)
    return TrainingDraws(pred, ctx, t, noise)


class WorldMarMasked(nn.Module):
    """Training module: forward(batch, rng) -> (loss, logs).

    batch: `latents` (B, T, N, C) raw VAE latents (frame 0 = target, then the context newest first, zero
    padding), `action` (B, 25) in the model's action encoding, `plucker` (B, T, 9, 16, 6), `timestamps` (B, T),
    `num_non_padding_frames` (B,).
    """

    def __init__(self, worldmar: WorldMAR) -> None:
        super().__init__()
        self.worldmar = worldmar

    def forward(self, batch: dict[str, torch.Tensor], rng: BatchRandom) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model = self.worldmar
        draws = training_draws(model, rng)
        terms = model(batch["latents"].float(), batch["action"], batch["plucker"], batch["timestamps"],
                      batch["num_non_padding_frames"], draws=draws)
        mask = draws.pred_mask.flatten().repeat(model.diffusion_batch_mul).to(terms.mse.dtype)
        count = mask.sum().clamp(min=1)
        return terms.loss, {"mse": ((terms.mse * mask).sum() / count).detach(),
                            "vb": ((terms.vb * mask).sum() / count).detach()}
