"""WorldMAR (nwrousell/world-mar `world_mar/models/mar.py`): a masked autoregressive world model.

Frames are Oasis VAE latents (576 tokens of 16 channels, an 18x32 grid), patchified 2x2 into a 9x16
grid of 64-d tokens. A spatio-temporal transformer encoder sees the context frames and the visible
tokens of the target frame (frame 0); each frame carries an extra row of learned buffer tokens.
The decoder replaces hidden target tokens with a mask token; its output at each target token
conditions a small per-token diffusion head (`worldmar_head`). Pose (Plücker), timestamp and action
embeddings are added in both. State-dict keys equal the reference checkpoints without `vae.*`.

`reference_compat` switches on the reference's behaviours that trained checkpoints have learned
around: attention dropout stays active at sampling, training context masks overwrite the padding
information, and (see `worldmar_conditioning.plucker_tokens`) constant Plücker maps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from engine.checkpoints.loading import check_module, load_into, read_state_dict, strip_prefix
from engine.core.module import Placed
from engine.core.noise import NoiseSource
from engine.errors import CheckpointError
from engine.families.oasis.dit import NoiseLevelEmbed
from engine.families.oasis.rotary import (
    RotaryFrequencies,
    axial_angles,
    language_frequencies,
    pair_angles,
    pixel_frequencies,
    rotation_table,
)
from engine.families.worldmar.blocks import AttentionDropout, AxisMask, BlockInputs, RotationTable, STBlock
from engine.families.worldmar.conditioning import plucker_tokens
from engine.families.worldmar.head import DiffLoss
from engine.families.worldmar.masks import (
    mask_from_orders,
    masked_counts,
    padding_mask,
    random_orders,
    token_validity,
    truncated_mask_rate,
    with_buffer_row,
)

PLUCKER_DIM = 6
ACTION_DIM = 25
EMBED_HIDDEN = 256
SCALE_FACTOR = 0.07843137255
VAE_KEY_PREFIX = "vae"
# encoder spatial, encoder temporal, decoder spatial, decoder temporal
AxisMasks = tuple[AxisMask, AxisMask, AxisMask, AxisMask]
REFERENCE_TRAINER_KWARGS = ("vae_config", "img_height", "img_width", "gradient_clip_val", "warmup_steps",
                            "learning_rate")


@dataclass(frozen=True)
class Conditioning:
    """Embeddings shared by the encoder, the decoder and every MAR iteration of a frame."""

    action: torch.Tensor  # (B, 1, 1, 1, D), added to frame 0
    frames: torch.Tensor  # (B, T, h, w, D): pose + timestamp embeddings


@dataclass(frozen=True)
class TrainingDraws:
    """Every random draw of one training step (reference order), injectable for replay."""

    pred_mask: torch.Tensor  # (B, h*w) bool: hidden target tokens
    ctx_mask: torch.Tensor | None  # (B, P-1, h*w) bool: dropped tokens of frames 1 .. P-1
    t: torch.Tensor  # (mul*B*h*w,) int64 diffusion step per row
    noise: torch.Tensor  # (mul*B*h*w, C) float32


class LossTerms(NamedTuple):
    loss: torch.Tensor  # scalar: masked mean of mse + vb
    mse: torch.Tensor  # (mul*B*h*w,)
    vb: torch.Tensor  # (mul*B*h*w,)


def _mlp(inputs: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, out))


class WorldMAR(Placed, nn.Module):
    """Constructor arguments are the reference's (without the VAE and trainer settings, see
    `from_reference_kwargs`), plus `reference_compat`."""

    def __init__(self, num_frames: int = 5, num_mem_frames: int = 2, num_prev_frames: int = 3,
                 patch_size: int = 2, vae_embed_dim: int = 16, vae_seq_h: int = 18, vae_seq_w: int = 32,
                 st_embed_dim: int = 256, encoder_depth: int = 8, encoder_num_heads: int = 8,
                 decoder_depth: int = 8, decoder_num_heads: int = 8, diffloss_w: int = 256,
                 diffloss_d: int = 3, num_sampling_steps: str | int = "100", diffusion_batch_mul: int = 4,
                 prev_masking_rate: float = 0.25, mask_ratio_min: float = 0.7, proj_dropout: float = 0.1,
                 attn_dropout: float = 0.1, warmstart: bool = False, reference_compat: bool = False) -> None:
        super().__init__()
        dim = st_embed_dim
        for heads in (encoder_num_heads, decoder_num_heads):
            if dim % heads or (dim // heads) % 2:
                raise ValueError(f"st_embed_dim {dim} / {heads} heads must give an even head size")
        self.num_frames = num_frames
        self.num_mem_frames = num_mem_frames
        self.num_prev_frames = num_prev_frames
        self.patch_size = patch_size
        self.vae_embed_dim = vae_embed_dim
        self.grid = (vae_seq_h // patch_size, vae_seq_w // patch_size)
        self.frame_tokens = self.grid[0] * self.grid[1]
        self.token_dim = vae_embed_dim * patch_size**2
        self.diffusion_batch_mul = diffusion_batch_mul
        self.prev_masking_rate = prev_masking_rate
        self.mask_ratio_min = mask_ratio_min
        self.attn_dropout = attn_dropout
        self.warmstart = warmstart
        self.reference_compat = reference_compat

        self.pose_embedder = _mlp(PLUCKER_DIM, EMBED_HIDDEN, dim)
        self.timestamp_embedder = NoiseLevelEmbed(dim)
        self.action_embedder = _mlp(ACTION_DIM, EMBED_HIDDEN, dim)
        enc_hd, dec_hd = dim // encoder_num_heads, dim // decoder_num_heads
        self.enc_spatial_rotary_embedder = RotaryFrequencies(pixel_frequencies(enc_hd // 2, 256))
        self.enc_temporal_rotary_embedder = RotaryFrequencies(language_frequencies(enc_hd))
        self.dec_spatial_rotary_embedder = RotaryFrequencies(pixel_frequencies(dec_hd // 2, 256))
        self.dec_temporal_rotary_embedder = RotaryFrequencies(language_frequencies(dec_hd))
        self.z_proj = nn.Linear(self.token_dim, dim)
        self.buf_token = nn.Parameter(torch.empty(1, dim))
        enc_ropes = (self.enc_spatial_rotary_embedder, self.enc_temporal_rotary_embedder)
        self.encoder_blocks = nn.ModuleList(
            STBlock(dim, encoder_num_heads, *enc_ropes, proj_dropout) for _ in range(encoder_depth))
        self.encoder_norm = nn.LayerNorm(dim)
        self.mask_token = nn.Parameter(torch.empty(1, 1, dim))
        dec_ropes = (self.dec_spatial_rotary_embedder, self.dec_temporal_rotary_embedder)
        self.decoder_blocks = nn.ModuleList(
            STBlock(dim, decoder_num_heads, *dec_ropes, proj_dropout) for _ in range(decoder_depth))
        self.decoder_norm = nn.LayerNorm(dim)
        self.diffloss = DiffLoss(self.token_dim, dim, diffloss_w, diffloss_d, num_sampling_steps)
        self.diffusion_pos_emb_learned = nn.Parameter(torch.empty(1, *self.grid, dim))
        self._rope_cache: dict[tuple[str, int, torch.dtype], tuple[RotationTable, RotationTable]] = {}
        if self.buf_token.device.type != "meta":
            self.initialize_weights()

    @classmethod
    def from_reference_kwargs(cls, kwargs: Mapping[str, object], reference_compat: bool = True) -> WorldMAR:
        """Build from the reference's `model.params` (a config or `model_small.json`'s constructor_kwargs):
        the VAE (a separate network here) and trainer settings are left out."""
        if kwargs.get("vae_config"):
            raise ValueError("WorldMAR holds no VAE: load the Oasis VAE as its own network "
                             "(vae_config must be null or absent)")
        return cls(**{k: v for k, v in kwargs.items() if k not in REFERENCE_TRAINER_KWARGS},
                   reference_compat=reference_compat)

    def initialize_weights(self) -> None:
        """The reference initialisation: xavier-uniform linears with zero bias, unit LayerNorms,
        kaiming-normal special tokens, N(0, 0.02) head time embedding, zeroed adaLN and output layers."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for param in (self.buf_token, self.mask_token, self.diffusion_pos_emb_learned):
            nn.init.kaiming_normal_(param)
        net = self.diffloss.net
        for layer in (net.time_embed.mlp[0], net.time_embed.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
        for layer in [block.adaLN_modulation[-1] for block in net.res_blocks] + [
                net.final_layer.adaLN_modulation[-1], net.final_layer.linear]:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    # ----- tokens and conditioning -----

    def tokens(self, latents: torch.Tensor) -> torch.Tensor:
        """Raw VAE latents (B, T, H*W, C) -> scaled, patchified tokens (B, T, h, w, C*p*p);
        feature index c*p*p + dy*p + dx."""
        b, t = latents.shape[:2]
        (h, w), p, c = self.grid, self.patch_size, self.vae_embed_dim
        x = (latents * SCALE_FACTOR).reshape(b, t, h, p, w, p, c)
        return x.permute(0, 1, 2, 4, 6, 3, 5).reshape(b, t, h, w, c * p * p)

    def latents(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens of one frame (B, h, w, C*p*p) -> raw VAE latents (B, H*W, C) (inverse of `tokens`)."""
        b = tokens.shape[0]
        (h, w), p, c = self.grid, self.patch_size, self.vae_embed_dim
        x = tokens.reshape(b, h, w, c, p, p).permute(0, 1, 4, 2, 5, 3)
        return x.reshape(b, h * p * w * p, c) / SCALE_FACTOR

    def plucker(self, poses: torch.Tensor, batch_nframes: torch.Tensor) -> torch.Tensor:
        """Plücker token maps (B, T, 9, 16, 6) of poses (B, T, 5), as this model's mode expects them."""
        return plucker_tokens(poses, batch_nframes, self.reference_compat)

    def condition(self, actions: torch.Tensor, plucker: torch.Tensor, timestamps: torch.Tensor,
                  batch_nframes: torch.Tensor) -> Conditioning:
        """actions (B, 25), plucker (B, T, h, w, 6) token maps, timestamps (B, T) int, batch_nframes (B,)."""
        b, t = timestamps.shape
        if plucker.shape != (b, t, *self.grid, PLUCKER_DIM):
            raise ValueError(f"plucker maps must have shape {(b, t, *self.grid, PLUCKER_DIM)} (token grid), "
                             f"got {tuple(plucker.shape)}")
        dtype = self.z_proj.weight.dtype
        pose = self.pose_embedder(plucker.to(dtype))
        stamps = self.timestamp_embedder(timestamps.reshape(-1)).view(b, t, 1, 1, -1)
        stamps = stamps * padding_mask(batch_nframes, t)[:, :, None, None, None]
        action = self.action_embedder(actions.to(dtype))[:, None, None, None]
        return Conditioning(action, pose + stamps)

    def _embedded(self, x: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """Add the action embedding to frame 0 and pose + timestamp embeddings to the latent rows."""
        h = self.grid[0]
        rows = x[:, :, :h]
        rows = torch.cat([rows[:, :1] + cond.action, rows[:, 1:]], dim=1) + cond.frames
        return torch.cat([rows, x[:, :, h:]], dim=2)

    # ----- transformer -----

    def attention_dropout(self, noise: NoiseSource | None = None) -> AttentionDropout | None:
        """Active in training; at sampling only in reference_compat mode (the reference passes its
        dropout to SDPA unconditionally)."""
        active = self.attn_dropout > 0 and (self.training or self.reference_compat)
        return AttentionDropout(self.attn_dropout, noise) if active else None

    def _rotations(self, blocks: nn.ModuleList, frames: int, dtype: torch.dtype) -> tuple[RotationTable, RotationTable]:
        """(spatial, temporal) RoPE tables of a block stack, built once per stack, frame count and dtype when no
        gradients are recorded (every MAR iteration of sampling reuses them); built afresh where they may join
        an autograd graph and while torch.compile/export traces (its traced tensors must not be kept)."""
        reuse = not torch.is_grad_enabled() and not torch.compiler.is_compiling()
        key = ("encoder" if blocks is self.encoder_blocks else "decoder", frames, dtype)
        if reuse and key in self._rope_cache:
            return self._rope_cache[key]
        s_freqs, t_freqs = blocks[0].spatial_attn.rotary_emb.freqs, blocks[0].temporal_attn.rotary_emb.freqs
        s_angles = axial_angles(self.grid[0] + 1, self.grid[1], s_freqs).flatten(0, 1)
        t_angles = pair_angles(torch.arange(frames, device=t_freqs.device), t_freqs)
        tables = (rotation_table(s_angles[:, None, None], dtype), rotation_table(t_angles[:, None, None], dtype))
        if reuse:
            self._rope_cache[key] = tables
        return tables

    def _block_inputs(self, blocks: nn.ModuleList, frames: int, spatial: AxisMask, temporal: AxisMask,
                      dropout: AttentionDropout | None, dtype: torch.dtype) -> BlockInputs:
        return BlockInputs(*self._rotations(blocks, frames, dtype), spatial, temporal, dropout)

    def _apply(self, fn, recurse: bool = True):
        self._rope_cache.clear()  # device or dtype moves recompute the tables from the float32 frequencies
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self._rope_cache.clear()  # loaded frequencies replace the ones the tables were built from
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _run(self, blocks: nn.ModuleList, norm: nn.LayerNorm, x: torch.Tensor,
             inputs: BlockInputs) -> torch.Tensor:
        b, t, rows, w, d = x.shape
        x = x.reshape(b, t, rows * w, d)
        for block in blocks:
            x = block(x, inputs)
        return norm(x).view(b, t, rows, w, d)

    def forward_encoder(self, x: torch.Tensor, cond: Conditioning, masks: AxisMasks,
                        dropout: AttentionDropout | None) -> torch.Tensor:
        """Tokens (B, T, h, w, C) -> encoder output (B, T, h+1, w, D) (buffer row last)."""
        b, t, _, w, _ = x.shape
        z = self._embedded(self.z_proj(x.to(self.z_proj.weight.dtype)), cond)
        z = torch.cat([z, self.buf_token.view(1, 1, 1, 1, -1).expand(b, t, 1, w, -1)], dim=2)
        inputs = self._block_inputs(self.encoder_blocks, t, masks[0], masks[1], dropout, z.dtype)
        return self._run(self.encoder_blocks, self.encoder_norm, z, inputs)

    def forward_decoder(self, enc: torch.Tensor, cond: Conditioning, pred_mask: torch.Tensor,
                        masks: AxisMasks, dropout: AttentionDropout | None) -> torch.Tensor:
        """Encoder output (B, T, h+1, w, D), hidden target tokens (B, (h+1)*w) -> (B, T, h, w, D)."""
        b, t, rows, w, _ = enc.shape
        hidden = pred_mask.view(b, rows, w, 1)
        filler = enc[:, 1] + self.mask_token if self.warmstart else self.mask_token
        y = torch.cat([torch.where(hidden, filler, enc[:, 0])[:, None], enc[:, 1:]], dim=1)
        y = self._embedded(y, cond)
        inputs = self._block_inputs(self.decoder_blocks, t, masks[2], masks[3], dropout, y.dtype)
        return self._run(self.decoder_blocks, self.decoder_norm, y, inputs)[:, :, : self.grid[0]]

    def masked_encoder_decoder(self, x: torch.Tensor, cond: Conditioning, pred_mask: torch.Tensor,
                               ctx_mask: torch.Tensor | None, padding: torch.Tensor,
                               dropout: AttentionDropout | None = None) -> torch.Tensor:
        """Decoder output (B, T, h, w, D) with target tokens `pred_mask` (B, h*w) hidden; `ctx_mask`
        (B, P-1, h*w) drops tokens of the previous frames (pass None outside training)."""
        w = self.grid[1]
        pred = with_buffer_row(pred_mask, w)
        ctx = None if ctx_mask is None else with_buffer_row(ctx_mask, w)
        masks = token_validity(pred, ctx, padding, self.reference_compat).axis_masks()
        enc = self.forward_encoder(x, cond, masks, dropout)
        return self.forward_decoder(enc, cond, pred, masks, dropout)

    def diffusion_conditions(self, dec: torch.Tensor) -> torch.Tensor:
        """Per-token conditions (B, h*w, D) of the diffusion head from decoder output (B, T, h, w, D)."""
        return (dec[:, 0] + self.diffusion_pos_emb_learned).flatten(1, 2)

    # ----- training -----

    def draw_training(self, batch: int, device: torch.device | str,
                      generator: torch.Generator | None = None) -> TrainingDraws:
        """The random draws of one training step: masking rate ~ truncnorm on [mask_ratio_min, 1],
        target mask, one context mask per previous frame, diffusion steps and noise per row."""
        device = torch.device(device)
        gen_device = generator.device if generator is not None else device
        n = self.frame_tokens
        uniform = float(torch.rand((), generator=generator, device=gen_device))
        rate = truncated_mask_rate(uniform, self.mask_ratio_min)
        hidden, dropped = masked_counts(n, rate, self.prev_masking_rate)
        pred = mask_from_orders(random_orders(batch, n, device, generator), hidden)
        ctx = None
        if self.num_prev_frames > 1:
            ctx = torch.stack([mask_from_orders(random_orders(batch, n, device, generator), dropped)
                               for _ in range(self.num_prev_frames - 1)], dim=1)
        rows = self.diffusion_batch_mul * batch * n
        steps = self.diffloss.train_diffusion.num_timesteps
        t = torch.randint(0, steps, (rows,), generator=generator, device=gen_device).to(device)
        noise = torch.randn((rows, self.token_dim), generator=generator, device=gen_device).to(device)
        return TrainingDraws(pred, ctx, t, noise)

    def forward(self, latents: torch.Tensor, actions: torch.Tensor, plucker: torch.Tensor,
                timestamps: torch.Tensor, batch_nframes: torch.Tensor, draws: TrainingDraws | None = None,
                generator: torch.Generator | None = None) -> LossTerms:
        """The training loss of one batch (the reference `forward`): latents (B, T, H*W, C) raw, frame 0 =
        target; a random share of its tokens is hidden and the diffusion head learns them, conditioned
        on the decoder output. Context masks and dropout act only in training mode."""
        b, t = latents.shape[:2]
        self.check_frames(t)
        x = self.tokens(latents)
        draws = draws or self.draw_training(b, latents.device, generator)
        cond = self.condition(actions, plucker, timestamps, batch_nframes)
        ctx = draws.ctx_mask if self.training else None
        dec = self.masked_encoder_decoder(x, cond, draws.pred_mask, ctx, padding_mask(batch_nframes, t),
                                          self.attention_dropout())
        mul = self.diffusion_batch_mul
        target = x[:, 0].flatten(0, 2).to(dec.dtype).repeat(mul, 1)
        z = self.diffusion_conditions(dec).flatten(0, 1).repeat(mul, 1)
        mask = draws.pred_mask.flatten().repeat(mul)
        mse, vb = self.diffloss.train_diffusion.training_terms(self.diffloss.net, target, draws.t, z,
                                                              draws.noise.to(target.dtype))
        return LossTerms(((mse + vb) * mask).sum() / mask.sum(), mse, vb)

    def check_frames(self, frames: int) -> None:
        if frames != self.num_frames:
            raise ValueError(f"WorldMAR was built for num_frames={self.num_frames}, got {frames} frames")


def reference_state_dict(source: str | Path | Mapping[str, torch.Tensor],
                         prefix: str | None = None) -> dict[str, torch.Tensor]:
    """Weights of a reference checkpoint as `WorldMAR` names them: a Lightning `.ckpt` (its
    `state_dict`), a plain state dict file or mapping; `prefix` stripped first, `vae*` keys dropped
    (the VAE is its own network here), as the reference's `load_filtered_checkpoint` does."""
    if isinstance(source, str | Path):
        state = read_state_dict(source, prefix)
    else:
        state = strip_prefix(source, prefix)
    return {k: v for k, v in state.items() if not k.startswith(VAE_KEY_PREFIX)}


def load_reference_checkpoint(model: WorldMAR, source: str | Path | Mapping[str, torch.Tensor],
                              prefix: str | None = None) -> None:
    """Load a reference checkpoint strictly (every non-VAE key and shape must match)."""
    state = reference_state_dict(source, prefix)
    diff = check_module(model, {key: tuple(value.shape) for key, value in state.items()})
    if not diff.ok:
        where = source if isinstance(source, str | Path) else "state dict"
        raise CheckpointError(f"checkpoint {where} does not fit WorldMAR (vae.* keys dropped): "
                              f"{diff.summary()}")
    load_into(model, state)
