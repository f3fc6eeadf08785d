"""FOV-overlap scoring of memory retrieval as one Triton kernel (GPU), beside its PyTorch reference.

For every stored camera j, `counts[j] = Σ_n weights[n] · visible(j, n)`, where visibility is the sign
test of `engine.memory.retrieval` (wedge and elevation-band forms `a·(p, 1) + b·h`, coefficients from
`linear_forms`). With `weights` = the points the target sees minus those already covered, this is the
numerator of every greedy step's ratio; no (P, N) mask is ever written.

Layout: each program takes `BLOCK_P` cameras and one of `SPLIT_N` slices of the points, walks its
slice in tiles of `BLOCK_N` points and adds its partial sums into `counts` atomically. The partial sums
are integers below 2**24 in float32, so they are exact and the atomic order cannot change the result.

Triton is imported on first use: CPU-only installs import this module and never touch it. With
`TRITON_INTERPRET=1` the kernel also runs on CPU tensors (Triton's interpreter), which the tests use
where there is no GPU.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

BLOCK_P = 32
BLOCK_N = 128
MAX_SPLIT_N = 64
DEFAULT_CHUNK_ELEMENTS = 1 << 16
# Rows of the linear forms (`engine.memory.retrieval.linear_forms`): wedge, band low, band high, x, z.
NUM_FORMS = 5


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def kernel_runs_on(device: torch.device) -> bool:
    """Triton is installed and can run on `device`: CUDA, or any tensors in Triton's interpreter."""
    return triton_available() and (device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1")


def homogeneous(points: torch.Tensor) -> torch.Tensor:
    """`(N, 3)` points -> `(4, N)` columns `(px, py, pz, 1)`."""
    return torch.cat([points.T, points.new_ones((1, points.shape[0]))]).contiguous()


def fov_mask_from_forms(points: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                        chunk_elements: int = DEFAULT_CHUNK_ELEMENTS, out: torch.Tensor | None = None) -> torch.Tensor:
    """FOV test of `(N, 3)` points for cameras given by `linear_forms` `(P, 5, 4), (P, 3)`: `(P, N)`
    float, 1.0 where visible (written into `out` when given).

    Cameras are processed in chunks of about `chunk_elements` pairs, so the scratch buffers stay in
    cache whatever P is. A float mask (not bool) because comparisons into float are several times
    faster on CPU and the greedy steps multiply it with the remaining-points vector anyway.
    """
    num_poses, num_points = a.shape[0], points.shape[0]
    if out is None:
        out = torch.empty((num_poses, num_points), dtype=points.dtype, device=points.device)
    if num_poses == 0 or num_points == 0:
        return out
    columns = homogeneous(points)
    rows = max(1, min(num_poses, chunk_elements // num_points))
    # Form-major scratch, so every form of a chunk is one contiguous (rows, N) block.
    scratch = torch.empty(NUM_FORMS * rows * num_points, dtype=points.dtype, device=points.device)
    dist = torch.empty((rows, num_points), dtype=points.dtype, device=points.device)
    a_by_form = a.transpose(0, 1)
    for start in range(0, num_poses, rows):
        stop = min(start + rows, num_poses)
        n = stop - start
        f, h = scratch[: NUM_FORMS * n * num_points].view(NUM_FORMS * n, num_points), dist[:n]
        torch.mm(a_by_form[:, start:stop].reshape(NUM_FORMS * n, 4), columns, out=f)
        wedge, low, high, x, z = f.view(NUM_FORMS, n, num_points).unbind(0)
        torch.mul(x, x, out=h).addcmul_(z, z).sqrt_()
        coeff = b[start:stop, :, None]
        wedge.addcmul_(h, coeff[:, 0])
        low.addcmul_(h, coeff[:, 1])
        high.addcmul_(h, coeff[:, 2])
        torch.minimum(wedge, low, out=x)
        torch.minimum(x, high, out=z)
        torch.gt(z, 0, out=out[start:stop])
    return out


def fov_overlap_counts_reference(points: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                                 weights: torch.Tensor) -> torch.Tensor:
    """PyTorch reference of the kernel: `(P,)` float32 weighted counts of visible points."""
    return fov_mask_from_forms(points.float(), a.float(), b.float()) @ weights.float()


@functools.cache
def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def fov_counts_kernel(points_ptr, a_ptr, b_ptr, weights_ptr, counts_ptr, num_poses, num_points, slice_len,
                          NUM_FORMS: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr):
        cams = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        cam_ok = cams < num_poses
        row = a_ptr + cams * (NUM_FORMS * 4)
        # Rows of a: wedge, low, high, x, z; columns multiply (px, py, pz, 1).
        w0 = tl.load(row + 0, mask=cam_ok, other=0.0)[:, None]
        w2 = tl.load(row + 2, mask=cam_ok, other=0.0)[:, None]
        w3 = tl.load(row + 3, mask=cam_ok, other=0.0)[:, None]
        l1 = tl.load(row + 5, mask=cam_ok, other=0.0)[:, None]
        l3 = tl.load(row + 7, mask=cam_ok, other=0.0)[:, None]
        u1 = tl.load(row + 9, mask=cam_ok, other=0.0)[:, None]
        u3 = tl.load(row + 11, mask=cam_ok, other=0.0)[:, None]
        x3 = tl.load(row + 15, mask=cam_ok, other=0.0)[:, None]
        z3 = tl.load(row + 19, mask=cam_ok, other=0.0)[:, None]
        hb = b_ptr + cams * 3
        bw = tl.load(hb + 0, mask=cam_ok, other=0.0)[:, None]
        bl = tl.load(hb + 1, mask=cam_ok, other=0.0)[:, None]
        bu = tl.load(hb + 2, mask=cam_ok, other=0.0)[:, None]
        acc = tl.zeros((BLOCK_P,), dtype=tl.float32)
        first = tl.program_id(1) * slice_len
        for offset in range(0, slice_len, BLOCK_N):
            idx = first + offset + tl.arange(0, BLOCK_N)
            ok = (idx < num_points) & (offset + tl.arange(0, BLOCK_N) < slice_len)
            px = tl.load(points_ptr + idx * 3 + 0, mask=ok, other=0.0)[None, :]
            py = tl.load(points_ptr + idx * 3 + 1, mask=ok, other=0.0)[None, :]
            pz = tl.load(points_ptr + idx * 3 + 2, mask=ok, other=0.0)[None, :]
            wt = tl.load(weights_ptr + idx, mask=ok, other=0.0)[None, :]
            # The x and z rows are (1, 0, 0, -cx) and (0, 0, 1, -cz); the others skip their zero terms.
            x = px + x3
            z = pz + z3
            h = tl.sqrt(x * x + z * z)
            wedge = w0 * px + w2 * pz + w3 + bw * h
            low = l1 * py + l3 + bl * h
            high = u1 * py + u3 + bu * h
            seen = (wedge > 0) & (low > 0) & (high > 0)
            acc += tl.sum(tl.where(seen, wt, 0.0), axis=1)
        tl.atomic_add(counts_ptr + cams, acc, mask=cam_ok)

    return fov_counts_kernel


def fov_overlap_counts(points: torch.Tensor, a: torch.Tensor, b: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Triton kernel: `(P,)` float32 weighted counts of the `(N, 3)` points each camera sees."""
    import triton

    points = points.float().contiguous()
    a, b = a.float().contiguous(), b.float().contiguous()
    weights = weights.float().contiguous()
    num_poses, num_points = a.shape[0], points.shape[0]
    counts = torch.zeros(num_poses, dtype=torch.float32, device=points.device)
    if num_poses == 0 or num_points == 0:
        return counts
    split = max(1, min(MAX_SPLIT_N, triton.cdiv(num_points, 8 * BLOCK_N)))
    slice_len = triton.cdiv(triton.cdiv(num_points, split), BLOCK_N) * BLOCK_N
    split = triton.cdiv(num_points, slice_len)
    grid = (triton.cdiv(num_poses, BLOCK_P), split)
    _kernel()[grid](points, a, b, weights, counts, num_poses, num_points, slice_len,
                    NUM_FORMS=NUM_FORMS, BLOCK_P=BLOCK_P, BLOCK_N=BLOCK_N)
    return counts
