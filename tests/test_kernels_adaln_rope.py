"""Fused adaLN-LayerNorm and RoPE kernels (kernels/adaln_layernorm.py, kernels/rope.py) against their
PyTorch references, which are checked against the DiT's own code.

The PyTorch halves always run. The Triton kernels run on a CUDA GPU, or on the CPU through Triton's
interpreter (TRITON_INTERPRET=1, in a subprocess so the interpreted kernels do not leak into this
process); each is skipped with its reason where it cannot run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from engine.families.oasis.dit import layer_norm, modulate
from engine.families.oasis.rotary import (
    axial_angles,
    pair_angles,
    pixel_frequencies,
    rotation_table,
)
from kernels.adaln_layernorm import _rows_per_condition, adaln_layernorm, adaln_layernorm_reference
from kernels.rope import rotate_pairs, rotate_pairs_fused, rotate_pairs_reference, table_layout
from tests.conftest import PROJECT_ROOT
from tests.triton_support import needs_gpu, needs_triton

# DiT-shaped cases: tokens (B, T, h, w, D), heads of head_dim; a width that is no power of two exercises the
# masked lanes. Small, because the interpreter runs one Python program per row.
SHAPES = [(2, 2, 2, 3, 64, 4), (1, 1, 3, 2, 96, 4)]

CHECK = textwrap.dedent("""
    import torch
    from engine.families.oasis.rotary import axial_angles, pair_angles, pixel_frequencies, rotation_table
    from kernels.adaln_layernorm import adaln_layernorm, adaln_layernorm_reference, kernel_runs_on
    from kernels.rope import rotate_pairs_fused, rotate_pairs_reference

    device, dtype, atol = torch.device("{device}"), getattr(torch, "{dtype}"), {atol}
    gen = torch.Generator().manual_seed(0)
    for b, t, h, w, d, heads in {shapes}:
        x = torch.randn((b, t, h, w, d), generator=gen).to(device, dtype)
        assert kernel_runs_on(x)
        shift, scale = (torch.randn((b, t, 1, 1, d), generator=gen).to(device, dtype) for _ in range(2))
        diff = (adaln_layernorm(x, shift, scale).float() - adaln_layernorm_reference(x, shift, scale).float())
        assert diff.abs().max().item() <= atol, ("adaln", diff.abs().max().item())
        head_dim = d // heads
        qk = torch.randn((b, t, h, w, 2, heads, head_dim), generator=gen).to(device, dtype)
        spatial = rotation_table(axial_angles(h, w, pixel_frequencies(head_dim // 2, 256))[:, :, None, None], dtype)
        freqs = 1.0 / 10000 ** (torch.arange(0, head_dim, 4) / head_dim)  # half the features: a pass-through tail
        temporal = rotation_table(pair_angles(torch.arange(t), freqs)[:, None, None, None, None], dtype)
        for table in (spatial, temporal):
            table = tuple(z.to(device) for z in table)
            diff = rotate_pairs_fused(qk, table).float() - rotate_pairs_reference(qk, table).float()
            assert diff.abs().max().item() <= atol, ("rope", diff.abs().max().item())
    print("ok")
""")


def run_check(device: str, dtype: str, atol: float, interpret: bool) -> None:
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    code = CHECK.format(device=device, dtype=dtype, atol=atol, shapes=SHAPES)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                            cwd=PROJECT_ROOT)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


@pytest.mark.parametrize("shape", SHAPES)
def test_references_are_the_dit_code(shape) -> None:
    b, t, h, w, d, heads = shape
    gen = torch.Generator().manual_seed(1)
    x = torch.randn((b, t, h, w, d), generator=gen)
    shift, scale = torch.randn((2, b, t, 1, 1, d), generator=gen)
    assert torch.equal(adaln_layernorm_reference(x, shift, scale), modulate(layer_norm(x), shift, scale))
    head_dim = d // heads
    qk = torch.randn((b, t, h, w, 2, heads, head_dim), generator=gen)
    table = rotation_table(axial_angles(h, w, pixel_frequencies(head_dim // 2, 256))[:, :, None, None], qk.dtype)
    assert torch.equal(rotate_pairs_reference(qk, table), rotate_pairs(qk, table))
    # Without a GPU or the interpreter the public functions are the references themselves.
    if not os.environ.get("TRITON_INTERPRET"):
        assert torch.equal(adaln_layernorm(x, shift, scale), adaln_layernorm_reference(x, shift, scale))
        assert torch.equal(rotate_pairs_fused(qk, table), rotate_pairs(qk, table))


def test_broadcast_layouts_of_the_dit() -> None:
    x = torch.empty((2, 3, 9, 16, 64))
    assert _rows_per_condition(x, torch.empty((2, 3, 1, 1, 64))) == 9 * 16
    assert _rows_per_condition(x, torch.empty((1, 3, 1, 1, 64))) is None  # broadcast over the batch: reference
    qk = torch.Size((2, 3, 9, 16, 2, 4, 16))
    assert table_layout(qk, torch.Size((9, 16, 1, 1, 16))) == (2 * 4, 9 * 16)  # spatial: grid rows
    assert table_layout(qk, torch.Size((3, 1, 1, 1, 1, 16))) == (9 * 16 * 2 * 4, 3)  # temporal: frame rows
    assert table_layout(qk, torch.Size((9, 1, 1, 1, 16))) == (16 * 2 * 4, 9)  # grid rows only
    assert table_layout(qk, torch.Size((9, 1, 2, 1, 16))) is None  # not one block of x's axes: reference
    angles = pair_angles(torch.arange(3), torch.ones(4))
    assert table_layout(qk, angles[:, None, None, None, None].shape) == (9 * 16 * 2 * 4, 3)


@needs_triton
def test_kernels_match_references_in_the_triton_interpreter() -> None:
    run_check("cpu", "float32", 1e-5, interpret=True)


@needs_gpu
@pytest.mark.parametrize("dtype, atol", [("float32", 1e-5), ("bfloat16", 0.05)])
def test_kernels_match_references_on_gpu(dtype: str, atol: float) -> None:
    run_check("cuda", dtype, atol, interpret=False)
