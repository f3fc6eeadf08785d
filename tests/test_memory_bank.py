"""Memory bank: preallocated buffers, insertion order, coverage-keeping eviction, save/load."""

from __future__ import annotations

import math

import pytest
import torch

from engine.errors import CheckpointError
from engine.memory.bank import BankSettings, MemoryBank, view_distance

LATENT = (6, 4)
ACTIONS = 25


def make_bank(capacity: int = 16, **settings) -> MemoryBank:
    return MemoryBank(capacity, LATENT, ACTIONS, settings=BankSettings(**{"keep_recent": 2, **settings}))


def put(bank: MemoryBank, frame: int, pose: tuple[float, ...]) -> torch.Tensor:
    latent = torch.full(LATENT, float(frame))
    action = torch.full((ACTIONS,), float(frame % 2))
    return bank.insert(latent, torch.tensor(pose), action, frame)


def stored_frames(bank: MemoryBank) -> list[int]:
    return sorted(bank.frame_index[: len(bank)].tolist())


def brute_force_nearest(bank: MemoryBank) -> torch.Tensor:
    """(size, 2) distances to the two nearest other stored frames."""
    poses = bank.poses[: len(bank)]
    d = view_distance(poses, poses, bank.settings)
    d.fill_diagonal_(math.inf)
    d = torch.cat([d, torch.full((len(d), 2), math.inf)], 1)
    return torch.topk(d, 2, largest=False).values


def test_buffers_are_preallocated_and_reused():
    bank = make_bank(8, keep_recent=2)
    pointers = {name: getattr(bank, name).data_ptr() for name in ("latents", "poses", "actions", "frame_index",
                                                                   "nearest", "nearest_slot", "stale")}
    assert bank.latents.shape == (8, *LATENT) and bank.poses.shape == (8, 5) and bank.actions.shape == (8, ACTIONS)
    for frame in range(40):
        put(bank, frame, (frame * 0.3, 64.0, 0.0, 0.0, frame * 7.0))
    assert len(bank) == 8 and bank.inserted == 40
    assert {name: getattr(bank, name).data_ptr() for name in pointers} == pointers


def test_fills_slots_in_order_then_lays_out_candidates_like_the_dataloader():
    bank = make_bank(8)
    slots = [int(put(bank, frame, (float(frame), 64.0, 0.0, 0.0, 0.0))) for frame in range(5)]
    assert slots == [0, 1, 2, 3, 4]
    assert bank.ordered_slots().tolist() == [0, 1, 2, 3, 4]
    assert bank.candidates().tolist() == [4, 0, 1, 2, 3]  # newest first, then oldest -> newest
    assert torch.equal(bank.latents[3], torch.full(LATENT, 3.0))
    assert torch.equal(bank.poses[2], torch.tensor([2.0, 64.0, 0.0, 0.0, 0.0]))
    assert bank.actions[1].tolist() == [1.0] * ACTIONS
    with pytest.raises(ValueError, match="not newer"):
        put(bank, 4, (0.0, 0.0, 0.0, 0.0, 0.0))


def test_nearest_neighbours_stay_exact_through_evictions():
    gen = torch.Generator().manual_seed(3)
    bank = make_bank(24, keep_recent=4, refresh_rows=24)
    for frame in range(150):
        pose = torch.cat([torch.rand(3, generator=gen) * 20, torch.rand(1, generator=gen) * 120 - 60,
                          torch.rand(1, generator=gen) * 360 - 180])
        bank.insert(torch.zeros(LATENT), pose, torch.zeros(ACTIONS), frame)
        assert not bank.stale[: len(bank)].any()
        assert torch.allclose(bank.nearest[: len(bank)], brute_force_nearest(bank), atol=1e-4)


def test_stale_rows_are_never_evicted_and_get_refreshed():
    gen = torch.Generator().manual_seed(4)
    bank = make_bank(32, keep_recent=3, refresh_rows=1)
    for frame in range(300):
        pose = torch.cat([torch.rand(3, generator=gen) * 8, torch.zeros(1), torch.rand(1, generator=gen) * 360])
        before = bank.stale.clone()
        slot = bank.insert(torch.zeros(LATENT), pose, torch.zeros(ACTIONS), frame)
        if frame >= 32:
            assert not before[slot], "a frame whose nearest distance was unknown got evicted"
        fresh = ~bank.stale[: len(bank)]
        assert torch.allclose(bank.nearest[: len(bank)][fresh], brute_force_nearest(bank)[fresh], atol=1e-4)


def test_keep_recent_frames_survive():
    bank = make_bank(10, keep_recent=5)
    for frame in range(60):
        put(bank, frame, (0.0, 64.0, 0.0, 0.0, 0.0))  # identical views: everything is equally redundant
        assert set(range(max(0, frame - 4), frame + 1)) <= set(stored_frames(bank))


def test_identical_views_evict_the_oldest():
    bank = make_bank(6, keep_recent=1)
    for frame in range(20):
        put(bank, frame, (0.0, 64.0, 0.0, 10.0, 30.0))
    assert stored_frames(bank) == list(range(14, 20))


def test_eviction_keeps_coverage_where_fifo_forgets():
    """Look around once, then stare north for a long time: the bank still remembers every direction."""
    bank = make_bank(12, keep_recent=2)
    frame = 0
    for yaw in range(-180, 180, 15):  # a full turn in place, 24 views
        put(bank, frame, (0.0, 64.0, 0.0, 0.0, float(yaw)))
        frame += 1
    for _ in range(300):
        put(bank, frame, (0.0, 64.0, 0.0, 0.0, 180.0))
        frame += 1
    yaws = bank.poses[: len(bank), 4]
    gaps = torch.diff(torch.sort(torch.remainder(yaws, 360)).values, append=yaws.new_tensor([360.0]))
    gaps[-1] += torch.remainder(yaws, 360).min()
    assert float(gaps.max()) <= 90.0, sorted(torch.remainder(yaws, 360).tolist())
    assert len(set(torch.remainder(yaws, 360).tolist())) >= 9
    # Keeping the 12 newest frames (FIFO) would hold nothing but the stare.
    assert sum(f < 24 for f in stored_frames(bank)) >= 8


def test_save_and_load_round_trip(tmp_path):
    gen = torch.Generator().manual_seed(5)
    bank = make_bank(10, keep_recent=2)

    def feed(target: MemoryBank, frames: range, g: torch.Generator) -> None:
        for frame in frames:
            pose = torch.cat([torch.rand(3, generator=g) * 10, torch.rand(2, generator=g) * 90])
            target.insert(torch.randn(LATENT, generator=g), pose, torch.rand(ACTIONS, generator=g), frame)

    feed(bank, range(25), gen)
    path = tmp_path / "memory.safetensors"
    bank.save(path)
    loaded = make_bank(10, keep_recent=2)
    loaded.load(path)
    assert (len(loaded), loaded.inserted) == (len(bank), bank.inserted)
    for key, value in bank.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    # Both continue identically.
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    feed(bank, range(25, 40), g1)
    feed(loaded, range(25, 40), g2)
    for key, value in bank.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_load_errors_name_the_file_and_key(tmp_path):
    bank = make_bank(10)
    put(bank, 0, (0.0, 0.0, 0.0, 0.0, 0.0))
    path = tmp_path / "memory.safetensors"
    bank.save(path)
    other = MemoryBank(10, (3, 4), ACTIONS, settings=BankSettings(keep_recent=2))
    with pytest.raises(CheckpointError, match=r"memory.safetensors: 'latents' has shape \(1, 6, 4\), expected \(1, 3, 4\)"):
        other.load(path)
    small = make_bank(10)
    for frame in range(1, 4):
        put(bank, frame, (float(frame), 0.0, 0.0, 0.0, 0.0))
    bank.save(path)
    tiny = MemoryBank(3, LATENT, ACTIONS, settings=BankSettings(keep_recent=1))
    with pytest.raises(CheckpointError, match="holds 4 frames; this bank has room for 3"):
        tiny.load(path)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match=r"garbage\.safetensors is not readable safetensors"):
        small.load(garbage)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="keep_recent < capacity"):
        make_bank(4, keep_recent=4)


def test_view_distance_is_exact_far_from_the_origin():
    far = torch.tensor([[12000.0, 70.0, -8000.0, 0.0, 0.0]]).expand(40, 5).clone()
    far[:, 0] += torch.arange(40) * 0.0625  # steps exact in float32 at this magnitude
    d = view_distance(far[:1], far, BankSettings(position_scale=1.0))
    assert torch.allclose(d[0], torch.arange(40) * 0.0625, atol=1e-6)
