"""Fused adaLN modulate + LayerNorm: `layer_norm(x) * (1 + scale) + shift` in one pass over x.

The Oasis DiT applies it four times per block (engine/families/oasis/dit.py: `modulate(layer_norm(x), ...)`),
on tokens x (B, T, h, w, D) with one shift/scale row per frame (B, T, 1, 1, D). Unfused, eager PyTorch
reads and writes x three times; the kernel reads x once, keeps the row in registers, and writes once.

`adaln_layernorm_reference` is the PyTorch definition and test oracle. The Triton kernel runs on CUDA
tensors, or on CPU tensors under Triton's interpreter (`TRITON_INTERPRET=1`, used by the tests); Triton is
imported lazily. Whether it beats torch.compile's fusion of the same op is measured by
`python -m bench kernels --device cuda`; the model code does not call it until that says so.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch
import torch.nn.functional as F

EPS = 1e-6


def adaln_layernorm_reference(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor,
                              eps: float = EPS) -> torch.Tensor:
    """LayerNorm over the last axis without affine parameters, then `* (1 + scale) + shift` (broadcast)."""
    return F.layer_norm(x, x.shape[-1:], eps=eps) * (1 + scale) + shift


def kernel_runs_on(x: torch.Tensor) -> bool:
    """Whether the Triton kernel can take `x`: a CUDA tensor, or any tensor under TRITON_INTERPRET=1."""
    if importlib.util.find_spec("triton") is None:
        return False
    return x.device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


def _rows_per_condition(x: torch.Tensor, cond: torch.Tensor) -> int | None:
    """How many consecutive rows of x share one row of `cond`, when cond is (..., 1, ..., 1, D) over x's
    leading axes (e.g. (B, T, 1, 1, D) against (B, T, h, w, D)); None for other broadcasts."""
    lead = x.shape[:-1]
    shape = (1,) * (x.dim() - cond.dim()) + tuple(cond.shape[:-1])
    if cond.shape[-1] != x.shape[-1]:
        return None
    split = len(shape)
    while split > 0 and shape[split - 1] == 1:
        split -= 1
    if any(shape[i] != lead[i] for i in range(split)):
        return None
    rows = 1
    for size in lead[split:]:
        rows *= size
    return rows


@functools.cache
def _compiled_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def adaln_layernorm_kernel(x_ptr, shift_ptr, scale_ptr, out_ptr, dim, rows_per_cond, eps,
                               BLOCK: tl.constexpr):
        row = tl.program_id(0)
        cond = row // rows_per_cond
        cols = tl.arange(0, BLOCK)
        mask = cols < dim
        x = tl.load(x_ptr + row * dim + cols, mask=mask, other=0.0).to(tl.float32)
        mean = tl.sum(x, axis=0) / dim
        centred = tl.where(mask, x - mean, 0.0)
        var = tl.sum(centred * centred, axis=0) / dim
        normed = centred * (1.0 / tl.sqrt(var + eps))
        shift = tl.load(shift_ptr + cond * dim + cols, mask=mask, other=0.0).to(tl.float32)
        scale = tl.load(scale_ptr + cond * dim + cols, mask=mask, other=0.0).to(tl.float32)
        out = normed * (1.0 + scale) + shift
        tl.store(out_ptr + row * dim + cols, out.to(out_ptr.dtype.element_ty), mask=mask)

    return adaln_layernorm_kernel, triton.next_power_of_2


def adaln_layernorm(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """The fused kernel where it can run on these tensors, else the reference; same result either way."""
    rows_per_cond = _rows_per_condition(x, shift)
    if (not kernel_runs_on(x) or rows_per_cond is None or shift.shape != scale.shape
            or shift.dtype != x.dtype or scale.dtype != x.dtype):
        return adaln_layernorm_reference(x, shift, scale, eps)
    kernel, next_power_of_2 = _compiled_kernel()
    x_rows = x.contiguous()
    out = torch.empty_like(x_rows)
    dim = x.shape[-1]
    rows = x_rows.numel() // dim
    kernel[(rows,)](x_rows, shift.contiguous(), scale.contiguous(), out, dim, rows_per_cond, eps,
                    BLOCK=next_power_of_2(dim))
    return out
