"""A tick keeps its work on the device: no host round trips inside the sampler and decoder."""

from __future__ import annotations

import pytest
import torch

from engine.core.loader import open_session
from tests.conftest import record_host_transfers
from tests.tiny_world import make_tiny_oasis_world


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory, oasis_dir):
    return make_tiny_oasis_world(tmp_path_factory.mktemp("tiny"), oasis_dir)


def test_tick_makes_no_host_transfer_calls(tiny_world, monkeypatch):
    session = open_session(str(tiny_world), device="cpu")
    action = torch.zeros(session.action_dim)
    session.step(action)
    calls = record_host_transfers(monkeypatch)
    for _ in range(session.settings.max_frames + 1):
        frame = session.step(action).frame
    monkeypatch.undo()
    assert calls == []
    assert frame.dtype == torch.uint8 and frame.shape == (*session.frame_size, 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (sync debug mode is CUDA-only)")
def test_cuda_tick_never_synchronises(tiny_world):
    session = open_session(str(tiny_world), device="cuda", dtype="bf16")
    action = torch.zeros(session.action_dim, device="cuda")
    session.step(action)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(session.settings.max_frames + 1):
            frame = session.step(action).frame
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert frame.device.type == "cuda"
