"""Fused rotary-embedding apply in Oasis's interleaved-pair convention (engine/families/oasis/rotary.py).

`rotate_pairs` rotates feature pairs (x[2j], x[2j+1]) by the table's angle and passes the features past
the table through; eagerly that is a slice, an unflatten, a stack of the swapped pair, two products, a
sum and a concatenation, each a pass over q and k. The kernel reads each row of x once (plus its
pair-swapped view, from cache) and writes it once, computing in float32.

The cos/sin tables broadcast against x the way the DiT uses them: one block of x's leading axes indexes
the table (the (h, w) grid for spatial RoPE, the frame axis for temporal RoPE) and the axes after it
repeat the same row. `rotate_pairs_reference` is the PyTorch definition and test oracle; the kernel
runs on CUDA tensors or under TRITON_INTERPRET=1 (tests), with Triton imported lazily. Whether it beats
torch.compile's fusion of the same op is measured by `python -m bench kernels --device cuda`; the
model code does not call it until that says so.
"""

from __future__ import annotations

import functools

import torch

from kernels.adaln_layernorm import kernel_runs_on

Table = tuple[torch.Tensor, torch.Tensor]


def rotate_pairs(x: torch.Tensor, table: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotate the first table[0].shape[-1] features of x pairwise; the remaining features pass through.

    (x[2j], x[2j+1]) -> (x[2j] cos - x[2j+1] sin, x[2j+1] cos + x[2j] sin).
    """
    cos, sin = table
    n = cos.shape[-1]
    head, tail = x[..., :n], x[..., n:]
    pairs = head.unflatten(-1, (-1, 2))
    swapped = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    rotated = head * cos + swapped * sin
    return rotated if tail.shape[-1] == 0 else torch.cat((rotated, tail), dim=-1)


def rotate_pairs_reference(x: torch.Tensor, table: Table) -> torch.Tensor:
    """The PyTorch definition (`rotate_pairs`, which the Oasis and WorldMAR networks call)."""
    return rotate_pairs(x, table)


def table_layout(x_shape: torch.Size, table_shape: torch.Size) -> tuple[int, int] | None:
    """(rows of x per table row, table rows) when the table's non-1 leading axes are one block of x's
    leading axes, e.g. (h, w, 1, 1, n) against (B, T, h, w, 2, heads, hd); None for other broadcasts."""
    lead = tuple(x_shape[:-1])
    shape = (1,) * (len(lead) - (len(table_shape) - 1)) + tuple(table_shape[:-1])
    if len(shape) != len(lead):
        return None
    used = [i for i, size in enumerate(shape) if size != 1]
    if not used:
        return 1, 1
    start, stop = used[0], used[-1] + 1
    if any(shape[i] != lead[i] for i in range(start, stop)):
        return None
    inner = 1
    for size in lead[stop:]:
        inner *= size
    rows = 1
    for size in lead[start:stop]:
        rows *= size
    return inner, rows


@functools.cache
def _compiled_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def rope_kernel(x_ptr, cos_ptr, sin_ptr, out_ptr, head_dim, rotated, inner, table_rows, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        table_row = (row // inner) % table_rows
        cols = tl.arange(0, BLOCK)
        mask = cols < head_dim
        x = tl.load(x_ptr + row * head_dim + cols, mask=mask, other=0.0).to(tl.float32)
        partner = tl.load(x_ptr + row * head_dim + (cols ^ 1), mask=mask, other=0.0).to(tl.float32)
        in_table = cols < rotated
        cos = tl.load(cos_ptr + table_row * rotated + cols, mask=in_table, other=1.0).to(tl.float32)
        sin = tl.load(sin_ptr + table_row * rotated + cols, mask=in_table, other=0.0).to(tl.float32)
        sign = tl.where(cols % 2 == 0, -1.0, 1.0)
        out = tl.where(in_table, x * cos + sign * partner * sin, x)
        tl.store(out_ptr + row * head_dim + cols, out.to(out_ptr.dtype.element_ty), mask=mask)

    return rope_kernel, triton.next_power_of_2


def rotate_pairs_fused(x: torch.Tensor, table: Table) -> torch.Tensor:
    """`rotate_pairs` through the kernel where it can run on these tensors, else the reference."""
    cos, sin = table
    layout = table_layout(x.shape, cos.shape)
    rotated = cos.shape[-1]
    if (not kernel_runs_on(x) or layout is None or cos.shape != sin.shape or rotated % 2
            or rotated > x.shape[-1] or x.shape[-1] % 2):
        return rotate_pairs_reference(x, table)
    inner, table_rows = layout
    kernel, next_power_of_2 = _compiled_kernel()
    x_rows = x.contiguous()
    out = torch.empty_like(x_rows)
    head_dim = x.shape[-1]
    cos_rows = cos.to(x.dtype).reshape(table_rows, rotated).contiguous()
    sin_rows = sin.to(x.dtype).reshape(table_rows, rotated).contiguous()
    kernel[(x_rows.numel() // head_dim,)](x_rows, cos_rows, sin_rows, out, head_dim, rotated, inner, table_rows,
                                          BLOCK=next_power_of_2(head_dim))
    return out
