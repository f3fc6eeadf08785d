"""Skip markers shared by the Triton kernel tests: a kernel runs compiled on a CUDA GPU, or on the CPU in
Triton's interpreter; where neither can, its test is skipped with the reason."""

from __future__ import annotations

import importlib.util

import pytest
import torch

HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed (pip install triton), so the "
                                                          "kernels cannot run, not even in its interpreter")
needs_gpu = pytest.mark.skipif(not (HAS_TRITON and torch.cuda.is_available()),
                               reason="the compiled kernels need a CUDA GPU and triton; none here")
