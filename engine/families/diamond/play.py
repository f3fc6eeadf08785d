"""DIAMOND's denoiser for play: the function of `Denoiser.denoise`, with the work that repeats every tick done once.

A sampler calls the denoiser at a fixed list of noise levels (its schedule), with batch 1 in play. Known ahead:
- the EDM preconditioners c_in, c_out, c_skip and the noise-level embeddings of every call;
- without actions (the CS:GO upsampler) the whole conditioning vector, hence every AdaGroupNorm scale and shift:
  computed once, never per tick;
- with actions, the conditioning vectors of all calls of a tick go through `cond_proj` and through every
  AdaGroupNorm projection as one matrix product (their weights stacked into one matrix, re-seated as views of it).
Each call then runs the U-Net channels-last, with the group norms taking the per-call scale and shift as their
affine weights (batch 1), the attention through `scaled_dot_product_attention` on stride-1 head layouts (its
fused kernels instead of the materialised score matrix), and on the CPU every convolution with weights
packed once for oneDNN instead of re-laid out on every call. Through a compiling backend the U-Net of a call
is one static-shape function of (input, the call's row of the modulation table), compiled (on CUDA replayed
as a CUDA graph) on plain channels-last weights; through TensorRT the exported `Denoiser.denoise` unit
replaces it whole (`play_sampler`).

Only float rounding differs from `Denoiser.denoise` (it reorders sums); the fixture tolerances cover it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from engine.backends.base import Backend
from engine.families.diamond.denoiser import Denoiser, quantize
from engine.families.diamond.edm import EdmSampler, EdmSamplerConfig
from engine.families.diamond.unet import GN_EPS, AdaGroupNorm, ResBlock, ResBlocks, SelfAttention2d
from engine.families.diamond.units import DenoiserCall, EngineDenoiser

CHANNELS_LAST = torch.channels_last


def _onednn_packing(weight: torch.Tensor) -> bool:
    return (weight.device.type == "cpu" and weight.dtype in (torch.float32, torch.bfloat16)
            and torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise"))


class FastConv:
    """`conv(x)` for channels-last x. On the CPU the weights are packed for oneDNN once per input shape (shapes are
    static in play); elsewhere (or with `pack=False`) the weights are kept channels-last, as cuDNN takes them."""

    def __init__(self, conv: nn.Conv2d, pack: bool = True) -> None:
        self.bias = conv.bias
        self.stride, self.padding, self.dilation = list(conv.stride), list(conv.padding), list(conv.dilation)
        self.groups = conv.groups
        self.onednn = pack and _onednn_packing(conv.weight)
        self.weight = conv.weight if self.onednn else conv.weight.contiguous(memory_format=CHANNELS_LAST)
        self.packed: dict[tuple[int, ...], torch.Tensor] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=CHANNELS_LAST)
        if not self.onednn:
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        shape = tuple(x.shape)
        packed = self.packed.get(shape)
        if packed is None:
            packed = torch._C._nn.mkldnn_reorder_conv2d_weight(
                self.weight.detach().to_mkldnn(), self.padding, self.stride, self.dilation, self.groups, list(shape))
            self.packed[shape] = packed
        return torch.ops.mkldnn._convolution_pointwise(x, packed, self.bias, self.padding, self.stride,
                                                       self.dilation, self.groups, "none", [], "")


Modulation = tuple[torch.Tensor, torch.Tensor]  # group-norm affine weight (1 + scale) and bias (shift), each (C,)


class _Attention:
    """SelfAttention2d: the residual adds to the normalised input, as in the reference."""

    def __init__(self, attn: SelfAttention2d, pack: bool) -> None:
        self.heads = attn.heads
        self.norm = attn.norm.norm
        self.qkv = FastConv(attn.qkv_proj, pack)
        self.out = FastConv(attn.out_proj, pack)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        x = F.group_norm(x, self.norm.num_groups, self.norm.weight, self.norm.bias, self.norm.eps)
        # channels-last qkv is (n, h, w, 3c) in memory, i.e. (n, hw, 3, heads, c / heads): stride-1 heads
        qkv = self.qkv(x).permute(0, 2, 3, 1).reshape(n, h * w, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v)
        y = y.transpose(1, 2).reshape(n, h, w, c).permute(0, 3, 1, 2)
        return x + self.out(y)


class _ResBlock:
    def __init__(self, block: ResBlock, norm_index: dict[AdaGroupNorm, int], pack: bool) -> None:
        self.proj = FastConv(block.proj, pack) if isinstance(block.proj, nn.Conv2d) else None
        self.norm1, self.norm2 = norm_index[block.norm1], norm_index[block.norm2]
        self.groups1, self.groups2 = block.norm1.groups, block.norm2.groups
        self.conv1, self.conv2 = FastConv(block.conv1, pack), FastConv(block.conv2, pack)
        self.attn = _Attention(block.attn, pack) if isinstance(block.attn, SelfAttention2d) else None

    def __call__(self, x: torch.Tensor, mods: Sequence[Modulation]) -> torch.Tensor:
        r = x if self.proj is None else self.proj(x)
        x = F.silu(F.group_norm(x, self.groups1, *mods[self.norm1], GN_EPS), inplace=True)
        x = F.silu(F.group_norm(self.conv1(x), self.groups2, *mods[self.norm2], GN_EPS), inplace=True)
        x = self.conv2(x).add_(r)
        return x if self.attn is None else self.attn(x)


def _blocks(blocks: ResBlocks, norm_index: dict[AdaGroupNorm, int], pack: bool) -> list[_ResBlock]:
    return [_ResBlock(block, norm_index, pack) for block in blocks.resblocks]


class PlayDenoiser:
    """Denoise function (`engine.families.diamond.edm.DenoiseFn`) for a sampler whose calls are known in advance.

    `call_sigmas`: the sigma of each denoiser call of one sample, in call order (see `call_sigmas`);
    `sigma_cond`: the conditioning frames' noise level the sampler passes (None without s_cond). Call
    `begin(act)` before each sample; the calls of the sample then take the precomputed entries in order.
    `pack_weights=False` keeps the CPU convolutions on plain channels-last weights (the path CUDA takes).
    """

    @torch.no_grad()
    def __init__(self, denoiser: Denoiser, call_sigmas: Sequence[torch.Tensor],
                 sigma_cond: torch.Tensor | None, pack_weights: bool = True) -> None:
        inner = denoiser.inner_model
        self.sigma_data = denoiser.cfg.sigma_data
        self.dtype = inner.dtype
        self.inner = inner
        sigma_cond = None if sigma_cond is None else sigma_cond.to(self.dtype)
        self.conditioners = [denoiser.compute_conditioners(sigma.to(self.dtype), sigma_cond) for sigma in call_sigmas]
        c_noise = torch.cat([cs.c_noise for cs in self.conditioners])
        c_noise_cond = torch.cat([cs.c_noise_cond for cs in self.conditioners])
        self.noise_emb = self._noise_embedding(c_noise, c_noise_cond)
        norms = [m for m in inner.modules() if isinstance(m, AdaGroupNorm)]
        norm_index = {norm: i for i, norm in enumerate(norms)}
        self.widths = [norm.linear.out_features // 2 for norm in norms]
        self.weight, self.bias = self._stack(norms, reseat=inner.act_emb is not None)
        self.scale_mask = torch.cat([torch.cat((torch.ones(c), torch.zeros(c))) for c in self.widths]).to(
            self.bias.device, self.bias.dtype)
        unet = inner.unet
        pack = pack_weights
        self.conv_in = FastConv(inner.conv_in, pack)
        self.levels = unet.levels
        self.down = [(None if isinstance(d, nn.Identity) else FastConv(d.conv, pack), _blocks(b, norm_index, pack))
                     for d, b in zip(unet.downsamples, unet.d_blocks, strict=True)]
        self.mid = _blocks(unet.mid_blocks, norm_index, pack)
        self.up = [(None if isinstance(u, nn.Identity) else FastConv(u.conv, pack), _blocks(b, norm_index, pack))
                   for u, b in zip(unet.upsamples, unet.u_blocks, strict=True)]
        self.norm_out = inner.norm_out.norm
        self.conv_out = FastConv(inner.conv_out, pack)
        self.inputs: torch.Tensor | None = None
        self.fixed = inner.act_emb is None
        self.table = self._modulation_table(self.noise_emb) if self.fixed else None
        if self.fixed:
            self.weight = self.bias = None  # stacked copies, no longer needed
        self.mods = None if self.table is None else [self._modulations(row) for row in self.table]
        self.unet: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
        self.call = 0

    def run_through(self, backend: Backend, name: str, frame_size: tuple[int, int]) -> None:
        """Run the U-Net of every call through `backend` (compiled with static shapes, on CUDA replayed as a
        CUDA graph) as one function of (conv_in input, this call's modulation row) at `frame_size`. Build
        with `pack_weights=False`: compiled code takes plain channels-last weights."""
        x = torch.zeros((1, self.conv_in.weight.shape[1], *frame_size), device=self.conv_in.weight.device,
                        dtype=self.dtype).contiguous(memory_format=CHANNELS_LAST)
        row = torch.zeros(2 * sum(self.widths), device=x.device, dtype=self.dtype)
        self.unet = backend.compile_step(self._inner_row, (x, row), name)

    def _noise_embedding(self, c_noise: torch.Tensor, c_noise_cond: torch.Tensor) -> torch.Tensor:
        """The noise-level part of the conditioning sum, (calls, cond_channels), as `InnerModel.condition` adds it
        (c_noise_cond is zero without sigma_cond, as `Denoiser.compute_conditioners` makes it)."""
        emb = self.inner.noise_emb(c_noise)
        if self.inner.noise_cond_emb is not None:
            emb = emb + self.inner.noise_cond_emb(c_noise_cond)
        return emb

    @staticmethod
    def _stack(norms: list[AdaGroupNorm], reseat: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """All AdaGroupNorm projections as one (sum 2C, cond) matrix; with `reseat`, the modules' own weights
        become views of it, so the stacked copy costs no memory."""
        weight = torch.cat([norm.linear.weight.detach() for norm in norms])
        bias = torch.cat([norm.linear.bias.detach() for norm in norms])
        if reseat:
            start = 0
            for norm in norms:
                end = start + norm.linear.out_features
                norm.linear.weight.data = weight[start:end]
                norm.linear.bias.data = bias[start:end]
                start = end
        return weight, bias

    def _modulation_table(self, emb: torch.Tensor) -> torch.Tensor:
        """(calls, sum 2C): per call, every AdaGroupNorm's (1 + scale, shift) from the conditioning sums `emb`
        (calls, cond_channels)."""
        return F.linear(self.inner.cond_proj(emb), self.weight, self.bias) + self.scale_mask

    def _modulations(self, row: torch.Tensor) -> list[Modulation]:
        """One call's row of the table as (1 + scale, shift) views per AdaGroupNorm."""
        entries, start = [], 0
        for width in self.widths:
            entries.append((row[start:start + width], row[start + width:start + 2 * width]))
            start += 2 * width
        return entries

    @torch.no_grad()
    def begin(self, act: torch.Tensor | None) -> None:
        """Start a sample with actions `act` (1, T) or (1, T, A), or None for a model without actions."""
        self.call = 0
        if not self.fixed:
            if act is None:
                raise ValueError("this denoiser is conditioned on actions: begin(act) needs them")
            self.table = self._modulation_table(self.noise_emb + self.inner.embed_actions(act))
            if self.unet is None:
                self.mods = [self._modulations(row) for row in self.table]

    @torch.no_grad()
    def __call__(self, noisy_next_obs: torch.Tensor, sigma: torch.Tensor, obs: torch.Tensor,
                 act: torch.Tensor | None, sigma_cond: torch.Tensor | None) -> torch.Tensor:
        """`Denoiser.denoise` of the next call of the sample (sigma, act and sigma_cond are those of `begin` and
        of the schedule, and are not read again)."""
        if self.call >= len(self.conditioners):
            raise RuntimeError(f"the sampler made more than {len(self.conditioners)} denoiser calls: call begin() "
                               "before each sample")
        if noisy_next_obs.shape[0] != 1:
            raise ValueError(f"the play denoiser runs batch 1, got {noisy_next_obs.shape[0]}")
        call, cs = self.call, self.conditioners[self.call]
        self.call += 1
        inputs = self._inputs(obs, noisy_next_obs)
        torch.div(obs, self.sigma_data, out=inputs[:, :obs.shape[1]])
        torch.mul(noisy_next_obs, cs.c_in, out=inputs[:, obs.shape[1]:])
        if self.unet is None:
            model_output = self._inner(inputs, self.mods[call]).float()
        else:
            model_output = self.unet(inputs, self.table[call]).float()
        return quantize(cs.c_skip * noisy_next_obs + cs.c_out * model_output)

    def _inputs(self, obs: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
        """The conv_in input cat(obs / sigma_data, noisy * c_in), preallocated channels-last."""
        shape = (1, obs.shape[1] + noisy.shape[1], *noisy.shape[2:])
        if self.inputs is None or tuple(self.inputs.shape) != shape:
            self.inputs = torch.empty(shape, device=noisy.device, dtype=self.dtype,
                                      memory_format=CHANNELS_LAST)
        return self.inputs

    def _inner_row(self, x: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
        return self._inner(x, self._modulations(row))

    def _inner(self, x: torch.Tensor, mods: Sequence[Modulation]) -> torch.Tensor:
        h, w = x.shape[-2:]
        multiple = 2 ** (self.levels - 1)
        x = self.conv_in(x)
        if h % multiple or w % multiple:
            x = F.pad(x, (0, -w % multiple, 0, -h % multiple))
        skips = []
        for down, blocks in self.down:
            x = x if down is None else down(x)
            level = [x]
            for block in blocks:
                x = block(x, mods)
                level.append(x)
            skips.append(level)
        for block in self.mid:
            x = block(x, mods)
        for (up, blocks), level in zip(self.up, reversed(skips), strict=True):
            if up is not None:
                x = up(F.interpolate(x, scale_factor=2.0, mode="nearest"))
            for block, skip in zip(blocks, reversed(level), strict=True):
                x = block(torch.cat((x, skip), dim=1), mods)
        x = x[..., :h, :w]
        norm = self.norm_out
        x = F.silu(F.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps), inplace=True)
        return self.conv_out(x).contiguous()


def call_sigmas(steps: Sequence) -> list[torch.Tensor]:
    """The sigma of every denoiser call of an `EdmSampler` plan (`sampler.steps`), in call order."""
    sigmas = []
    for step in steps:
        sigmas.append(step.sigma)
        if step.heun:
            sigmas.append(step.next_sigma_batch)
    return sigmas


def play_sampler(model: Denoiser, cfg: EdmSamplerConfig, device: torch.device, backend: Backend | None = None,
                 name: str = "denoiser", frame_size: tuple[int, int] | None = None
                 ) -> tuple[EdmSampler, PlayDenoiser | EngineDenoiser]:
    """An `EdmSampler` (batch 1) calling `model` through a `PlayDenoiser` prepared for its schedule's calls;
    call `play.begin(act)` before each `sampler.sample`.

    With a compiling `backend` the U-Net of each call runs compiled (and on CUDA graph-captured) at
    `frame_size`; with one that replaces whole units (TensorRT) the engine of unit `name` (`DenoiserCall`,
    as `build_trt.py` exports it) is the denoise function.
    """
    sampler = EdmSampler(None, cfg, 1, device)
    if backend is not None and backend.replaces_units:
        unit = DenoiserCall(model, actions=model.inner_model.act_emb is not None,
                            sigma_cond=sampler.sigma_cond is not None)
        play = EngineDenoiser(backend.compile(unit, name))
    else:
        compiled = backend is not None and backend.name != "eager"
        play = PlayDenoiser(model, call_sigmas(sampler.steps), sampler.sigma_cond, pack_weights=not compiled)
        if compiled:
            if frame_size is None:
                raise ValueError("a compiled play denoiser needs the frame size it runs at")
            play.run_through(backend, name, frame_size)
    sampler.denoise = play
    return sampler, play
