"""WorldMAR's MAR sampler with its network calls run through a backend.

The same algorithm as `MARSampler` with the same random draws, but every network call has static shapes
(the units of `worldmar_units`, which `build_trt.py` exports under the same names):

- `mar_condition`: action, pose and timestamp embeddings, once per frame;
- `mar_step`: the masked encoder/decoder and the head's conditions, once per MAR iteration (only the
  hidden-token mask changes between iterations);
- `mar_head`: the diffusion head at every DDIM step. Groups differ in size from iteration to iteration,
  so each is padded with zero rows to the largest group (`largest_group`): the head treats every row on
  its own, and the padded rows are dropped before the tokens are written back.

The whole frame after the noise draws (`mar_frame`) is one captured call: on CUDA with `--backend compile`,
one CUDA graph replay per tick. The compile backend compiles the very units TensorRT replaces, so both
run the same calls (there is no larger Python function worth compiling: the DDIM updates between head
calls are a few element-wise operations, and inside the graph they cost no launches).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.backends.base import Backend
from engine.core.noise import NoiseSource
from engine.errors import ConfigError
from engine.families.worldmar.mar import MARSampler, MARSettings, ddim_sample, largest_group
from engine.families.worldmar.model import ACTION_DIM, PLUCKER_DIM, Conditioning, WorldMAR
from engine.families.worldmar.units import MARCondition, MARHead, MARStep


class BackendMARSampler(MARSampler):
    """`MARSampler` whose frame is static-shape backend calls (padded head groups), captured as one call."""

    def __init__(self, model: WorldMAR, settings: MARSettings, noise: NoiseSource, backend: Backend | None = None,
                 batch: int = 1) -> None:
        super().__init__(model, settings, noise)
        self.backend = backend = backend or Backend(model.device, model.dtype)
        if model.attention_dropout() is not None:  # its random draws happen inside the network calls
            raise ConfigError(f"--backend {backend.name}: this WorldMAR samples with attention dropout "
                              f"(networks.worldmar.attn_dropout={model.attn_dropout:g} with reference_compat: true), "
                              "which draws random numbers inside its network calls; run it with --backend eager, "
                              "or set networks.worldmar.attn_dropout=0 or reference_compat=false")
        self.head_rows = largest_group(model.frame_tokens, settings.mar_iters)
        self._condition_call = backend.compile(MARCondition(model), "mar_condition")
        self._step = backend.compile(MARStep(model), "mar_step")
        self._head = backend.compile(MARHead(model), "mar_head")
        self._captured = backend.capture(super()._frame, frame_example(model, batch), "mar_frame")

    def _frame(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self._captured(*inputs)

    def _condition(self, actions: torch.Tensor, plucker: torch.Tensor, timestamps: torch.Tensor,
                   batch_nframes: torch.Tensor) -> Conditioning:
        return Conditioning(*self._condition_call(actions, plucker, timestamps, batch_nframes))

    def _head_conditions(self, x: torch.Tensor, cond: Conditioning, hidden: torch.Tensor,
                         padding: torch.Tensor) -> torch.Tensor:
        return self._step(x, cond.action, cond.frames, hidden, padding)

    def _denoise(self, cond: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        b, size, channels = start.shape
        pad = (0, 0, 0, self.head_rows - size)
        tokens = ddim_sample(self._head, self.diffusion, F.pad(cond, pad).flatten(0, 1), F.pad(start, pad).flatten(0, 1))
        return tokens.view(b, self.head_rows, channels)[:, :size]


def frame_example(model: WorldMAR, batch: int) -> tuple[torch.Tensor, ...]:
    """Inputs of `MARSampler._frame` with the play shapes (T = num_frames): what a capture is prepared with."""
    device, frames, (h, w) = model.device, model.num_frames, model.grid
    tokens = model.frame_tokens
    latent_tokens = tokens * model.patch_size**2
    return (torch.zeros((batch, frames, latent_tokens, model.vae_embed_dim), device=device),
            torch.zeros((batch, ACTION_DIM), device=device),
            torch.zeros((batch, frames, h, w, PLUCKER_DIM), device=device),
            -torch.arange(frames, device=device).repeat(batch, 1),
            torch.full((batch,), frames, dtype=torch.long, device=device),
            torch.arange(tokens, device=device).repeat(batch, 1),
            torch.zeros((batch, tokens, model.token_dim), device=device))
