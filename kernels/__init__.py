"""Hand-written GPU kernels, each beside the PyTorch code that is its reference and test oracle.

Triton is imported lazily inside each module, so machines without it (CPU-only installs) can import
the package and fall back to the PyTorch paths.
"""
