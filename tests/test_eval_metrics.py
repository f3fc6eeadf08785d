"""engine.eval's pure pieces: metrics, baselines, revisit detection and report outputs, on known cases."""

from __future__ import annotations

import json
import math
import time

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from engine.errors import ConfigError, EngineError
from engine.eval.baselines import copy_last, shuffle_in_time, time_permutation
from engine.eval.metrics import (
    PSNR_CAP_DB,
    MetricAccumulator,
    MetricStats,
    psnr_per_frame,
    ssim_per_frame,
    summarize_psnr,
)
from engine.eval.report import (
    TableRow,
    final_json,
    format_table,
    side_by_side,
    write_plot,
    write_side_by_side,
)
from engine.eval.revisits import Revisit, find_revisits


def _frames(n: int, h: int = 24, w: int = 30, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def _scene(h: int = 64, w: int = 80) -> np.ndarray:
    """A smooth, structured frame (gradients and a box): SSIM against noise is low, H.264 keeps it well."""
    y, x = np.mgrid[0:h, 0:w]
    frame = np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) * 255 // (h + w - 2)], axis=-1)
    frame[h // 4: h // 2, w // 4: w // 2] = (240, 30, 30)
    return frame.astype(np.uint8)


def _direct_psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        return 10 * np.log10(255.0**2 / mse)


# --- metrics ---------------------------------------------------------------------------------------------


def test_identical_frames_give_inf_per_frame_and_the_cap_in_the_summary():
    frames = _frames(5)
    psnr = psnr_per_frame(frames, frames)
    assert psnr.shape == (5,) and np.all(np.isposinf(psnr))
    summary = summarize_psnr(psnr)
    assert summary == MetricStats(mean=PSNR_CAP_DB, std=0.0, count=5, n_capped=5, cap=PSNR_CAP_DB)


def test_summary_mixes_capped_and_finite_frames():
    real = _frames(4)
    dream = real.copy()
    dream[3] = np.clip(real[3].astype(int) + 3, 0, 255)
    psnr = psnr_per_frame(dream, real)
    summary = summarize_psnr(psnr)
    assert summary.n_capped == 3 and summary.count == 4
    assert summary.mean == pytest.approx((3 * PSNR_CAP_DB + psnr[3]) / 4)


@pytest.mark.parametrize("k", [1, 5, 40])
def test_psnr_of_a_constant_offset_equals_the_formula(k: int):
    base = np.random.default_rng(k).integers(0, 256 - k, (3, 16, 20, 3), dtype=np.uint8)
    shifted = base + np.uint8(k)
    expected = 20 * math.log10(255 / k)
    assert psnr_per_frame(shifted, base) == pytest.approx([expected] * 3, abs=1e-3)
    # torch tensors, and [0, 1] floats, give the same
    assert psnr_per_frame(torch.from_numpy(shifted), torch.from_numpy(base)) == pytest.approx([expected] * 3, abs=1e-3)
    assert psnr_per_frame(shifted / 255.0, base / 255.0) == pytest.approx([expected] * 3, abs=1e-3)


def test_ssim_of_identical_frames_is_one_and_of_noise_is_low():
    scene = np.stack([_scene(), _scene()[:, ::-1]])
    assert ssim_per_frame(scene, scene) == pytest.approx([1.0, 1.0], abs=1e-5)
    noise = _frames(2, 64, 80, seed=3)
    assert np.all(ssim_per_frame(noise, scene) < 0.1)


def test_batching_does_not_change_scores():
    a, b = _frames(7, seed=1), _frames(7, seed=2)
    assert psnr_per_frame(a, b, batch_size=2) == pytest.approx(psnr_per_frame(a, b), abs=1e-9)
    assert ssim_per_frame(a, b, batch_size=3) == pytest.approx(ssim_per_frame(a, b), abs=1e-6)


def test_mismatched_or_malformed_frames_are_refused():
    with pytest.raises(EngineError, match="differ in shape"):
        psnr_per_frame(_frames(2), _frames(3))
    with pytest.raises(EngineError, match=r"\(N, H, W, 3\)"):
        ssim_per_frame(_frames(2)[..., :2], _frames(2)[..., :2])


def test_accumulator_gives_mean_std_count_per_condition_and_horizon():
    acc = MetricAccumulator(cap=PSNR_CAP_DB)
    acc.add("model", 8, [20.0, 30.0])
    acc.add("model", 1, np.array([40.0, math.inf]))
    acc.add("model", 8, 25.0)
    acc.add("copy-last", 8, [10.0])
    assert acc.keys() == [("model", 8), ("model", 1), ("copy-last", 8)]
    assert acc.conditions() == ["model", "copy-last"]
    stats = acc.stats("model", 8)
    assert (stats.mean, stats.count, stats.n_capped) == (25.0, 3, 0)
    assert stats.std == pytest.approx(np.std([20.0, 30.0, 25.0]))
    assert acc.stats("model", 1) == MetricStats(mean=70.0, std=30.0, count=2, n_capped=1, cap=PSNR_CAP_DB)
    assert acc.curve("model") == {1: 70.0, 8: 25.0}
    assert np.isposinf(acc.values("model", 1)).sum() == 1  # raw scores stay uncapped
    assert set(acc.as_dict()) == {"model", "copy-last"}


# --- baselines -------------------------------------------------------------------------------------------


def test_copy_last_scores_as_the_last_prompt_frame_against_each_later_frame():
    video = _frames(10, seed=4)
    video[7] = video[3]  # a later frame equal to the last prompt frame: inf
    prompt, later = video[:4], video[4:]
    pred = copy_last(prompt, len(later))
    assert pred.shape == later.shape and np.array_equal(pred[2], prompt[-1])
    expected = _direct_psnr(np.repeat(prompt[-1:], len(later), axis=0), later)
    got = psnr_per_frame(pred, later)
    assert np.isposinf(got[3]) and np.isposinf(expected[3])
    assert got == pytest.approx(expected, abs=1e-3)
    assert torch.equal(copy_last(torch.from_numpy(prompt[-1]), 3)[1], torch.from_numpy(prompt[-1]))
    with pytest.raises(ConfigError):
        copy_last(prompt, 0)


def test_shuffled_actions_are_a_seeded_permutation_of_the_rows_and_never_the_identity():
    actions = np.random.default_rng(5).normal(size=(50, 4)).astype(np.float32)
    shuffled = shuffle_in_time(actions, seed=7)
    perm = time_permutation(50, seed=7)
    assert np.array_equal(np.sort(perm), np.arange(50)) and not np.array_equal(perm, np.arange(50))
    assert np.array_equal(shuffled, actions[perm])  # rows are moved, never changed
    assert np.array_equal(shuffle_in_time(actions, seed=7), shuffled)
    assert not np.array_equal(shuffle_in_time(actions, seed=8), shuffled)
    assert torch.equal(shuffle_in_time(torch.from_numpy(actions), seed=7), torch.from_numpy(shuffled))
    # two frames: a random permutation is the identity half the time; the shuffle never is
    assert all(time_permutation(2, seed).tolist() == [1, 0] for seed in range(40))
    assert np.array_equal(shuffle_in_time(actions[:1], seed=0), actions[:1])


# --- revisits --------------------------------------------------------------------------------------------


def _poses(xz_yaw: list[tuple[float, float, float]]) -> np.ndarray:
    return np.array([(x, 0.0, z, 0.0, yaw) for x, z, yaw in xz_yaw], dtype=np.float32)


def _square_lap() -> list[tuple[float, float, float]]:
    """40 frames round a 10x10 square, one unit a frame, facing the way of walking (yaw 0 faces +z)."""
    corners = [((0, 0), (0, 1), 0.0), ((0, 10), (1, 0), 90.0), ((10, 10), (0, -1), 180.0), ((10, 0), (-1, 0), 270.0)]
    return [(x0 + i * dx, z0 + i * dz, yaw) for (x0, z0), (dx, dz), yaw in corners for i in range(10)]


def _loop_then_turn() -> np.ndarray:
    """Frames 0-79: the square walked twice (frame t + 40 is frame t's pose); frames 80-121: standing at
    (50, 50) turning 10 degrees a frame, so frame 116 (yaw 360) faces like frame 80 and 117-121 like 81-85."""
    turn = [(50.0, 50.0, 10.0 * i) for i in range(42)]
    return _poses(_square_lap() * 2 + turn)


def test_revisits_of_a_loop_walked_twice_and_an_in_place_turn():
    poses = _loop_then_turn()
    found = find_revisits(poses, 16, max_distance=0.5, max_yaw_degrees=4.0)
    assert found == [Revisit(frame=40, earlier=0, stop=80), Revisit(frame=116, earlier=80, stop=122)]
    assert found[0].frames == range(40, 80) and found[1].gap == 36


@pytest.mark.parametrize(("context", "expected"), [(35, [(40, 0), (116, 80)]), (36, [(40, 0)]), (39, [(40, 0)]),
                                                   (40, []), (200, [])])
def test_places_seen_within_the_context_window_are_not_revisits(context: int, expected: list[tuple[int, int]]):
    found = find_revisits(_loop_then_turn(), context, max_distance=0.5, max_yaw_degrees=4.0)
    assert [(r.frame, r.earlier) for r in found] == expected


def test_min_gap_overrides_the_default_of_context_plus_one():
    found = find_revisits(_loop_then_turn(), 16, max_distance=0.5, max_yaw_degrees=4.0, min_gap=37)
    assert [(r.frame, r.earlier) for r in found] == [(40, 0)]
    with pytest.raises(ConfigError, match="must exceed"):
        find_revisits(_loop_then_turn(), 16, max_distance=0.5, max_yaw_degrees=4.0, min_gap=16)


def test_walking_back_counts_only_where_the_yaw_agrees_and_beyond_the_context():
    out = [(0.0, float(z), 0.0) for z in range(40)]
    turn = [(0.0, 39.0, 30.0 * i) for i in range(1, 7)]  # 180 degrees in place
    back_facing = [(0.0, float(z), 180.0) for z in range(38, -1, -1)]
    assert find_revisits(_poses(out + turn + back_facing), 8, max_distance=0.5, max_yaw_degrees=30.0) == []
    # walking back without turning: frame 40 + i stands where frame 38 - i stood, 2 + 2i frames later;
    # the first return beyond a context of 8 frames is i = 4 (frame 44 sees frame 34), lasting to the end
    back_reversing = [(0.0, float(z), 0.0) for z in range(38, -1, -1)]
    found = find_revisits(_poses(out + back_reversing), 8, max_distance=0.5, max_yaw_degrees=30.0)
    assert found == [Revisit(frame=44, earlier=34, stop=79)]


def test_yaw_wraps_around_and_nan_poses_are_never_revisits():
    poses = _poses([(0.0, 0.0, 359.0)] + [(float(x), 5.0, 0.0) for x in range(1, 20)] + [(0.0, 0.0, 1.0)])
    assert find_revisits(poses, 8, max_distance=0.5, max_yaw_degrees=3.0) == [Revisit(20, 0, 21)]
    assert find_revisits(poses, 8, max_distance=0.5, max_yaw_degrees=1.5) == []
    poses[20, 4] = np.nan
    assert find_revisits(poses, 8, max_distance=0.5, max_yaw_degrees=3.0) == []
    loop = _loop_then_turn()
    loop[:, :] = np.nan
    assert find_revisits(loop, 16, max_distance=0.5, max_yaw_degrees=4.0) == []


def test_revisits_take_tensors_and_refuse_malformed_input():
    poses = _loop_then_turn()
    assert find_revisits(torch.from_numpy(poses), 16, max_distance=0.5, max_yaw_degrees=4.0)[0] == Revisit(40, 0, 80)
    assert find_revisits(np.zeros((0, 5)), 16, max_distance=0.5, max_yaw_degrees=4.0) == []
    with pytest.raises(EngineError, match=r"\(T, 5\)"):
        find_revisits(poses[:, :4], 16, max_distance=0.5, max_yaw_degrees=4.0)
    with pytest.raises(ConfigError):
        find_revisits(poses, -1, max_distance=0.5, max_yaw_degrees=4.0)


def _reference_revisits(poses: np.ndarray, context: int, max_distance: float, max_yaw: float) -> list[Revisit]:
    """The definition written plainly, over every pair."""
    gap, n = context + 1, len(poses)
    valid = np.isfinite(poses[:, [0, 1, 2, 4]]).all(axis=1)
    dist = np.linalg.norm(poses[:, None, :3] - poses[None, :, :3], axis=2)
    dyaw = np.abs((poses[:, None, 4] - poses[None, :, 4] + 180.0) % 360.0 - 180.0)
    close = (dist <= max_distance) & (dyaw <= max_yaw) & valid[:, None] & valid[None, :]
    old = [close[t, : max(0, t - gap + 1)].any() for t in range(n)]
    found, t = [], 0
    while t < n:
        if old[t]:
            stop = t
            while stop < n and old[stop]:
                stop += 1
            earlier = int(np.flatnonzero(close[t, : t - gap + 1])[-1])
            if not close[t, earlier + 1:t].all():  # the player left the place in between
                found.append(Revisit(frame=t, earlier=earlier, stop=stop))
            t = stop
        else:
            t += 1
    return found


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_revisits_agree_with_the_plain_definition_on_random_walks(seed: int):
    rng = np.random.default_rng(seed)
    n = 700
    poses = np.zeros((n, 5))
    poses[:, [0, 2]] = np.cumsum(rng.normal(size=(n, 2)) * 0.4, axis=0) % 12.0  # a walk folded into a room
    poses[:, 1] = (rng.random(n) < 0.05).cumsum() % 2  # now and then up or down a floor
    poses[:, 4] = np.cumsum(rng.normal(size=n) * 8.0)
    poses[rng.random(n) < 0.02] = np.nan
    expected = _reference_revisits(poses, 20, 1.0, 20.0)
    assert len(expected) >= 3  # the case is not trivial
    assert find_revisits(poses, 20, max_distance=1.0, max_yaw_degrees=20.0) == expected


def test_revisits_of_ten_thousand_frames_take_well_under_a_second():
    rng = np.random.default_rng(0)
    n = 10_000
    poses = np.zeros((n, 5), dtype=np.float32)
    poses[:, [0, 2]] = np.cumsum(rng.normal(size=(n, 2)) * 0.3, axis=0)
    poses[:, 4] = np.cumsum(rng.normal(size=n) * 5.0)
    start = time.perf_counter()
    find_revisits(poses, 32, max_distance=1.0, max_yaw_degrees=15.0)
    assert time.perf_counter() - start < 1.0


# --- report ----------------------------------------------------------------------------------------------


def test_table_lists_every_condition_with_aligned_columns():
    rows = [TableRow("model", 24.5, 0.81234, {1: 24.5, 8: 20.1, 32: 17.0}),
            TableRow("copy-last", 21.0, 0.7, {1: 21.0, 8: 18.0, 32: 15.5, 128: 13.0}),
            TableRow("shuffled actions", 22.0, 0.75, {1: 22.0}),
            TableRow("memory on", None, None, {128: math.inf}),
            TableRow("memory off", float("nan"), None, {128: 12.25})]
    lines = format_table(rows).splitlines()
    assert lines[0].split() == ["condition", "TF", "PSNR", "TF", "SSIM", "OL", "PSNR@1", "OL", "PSNR@8", "OL",
                                "PSNR@32", "OL", "PSNR@128"]
    table = lines[:2 + len(rows)]
    assert len({len(line) for line in table}) == 1
    assert lines[2].split() == ["model", "24.50", "0.8123", "24.50", "20.10", "17.00", "-"]
    assert lines[5].split() == ["memory", "on", "-", "-", "-", "-", "-", "inf"]
    assert lines[6].split()[-1] == "12.25"


def test_plot_is_a_readable_png(tmp_path):
    curves = {"model": {1: 25.0, 8: 21.0, 32: 18.0, 128: 15.0}, "copy-last": {1: 22.0, 8: math.inf, 128: 12.0}}
    path = write_plot(curves, tmp_path / "plots" / "psnr.png")
    image = imageio.imread(path)
    assert image.shape[:2] == (400, 640) and image.std() > 0


def test_side_by_side_video_decodes_with_its_frame_count_and_size(tmp_path):
    real = np.stack([np.roll(_scene(), 2 * i, axis=1) for i in range(12)])
    dream = real.copy()
    dream[:, 10:20, 10:20] = 0
    path = write_side_by_side(real, dream, tmp_path / "videos" / "sbs.mp4", fps=10)
    with imageio.get_reader(path) as reader:
        decoded = [frame for frame in reader]
        assert reader.get_meta_data()["fps"] == pytest.approx(10)
    assert len(decoded) == 12 and decoded[0].shape == (256, 960, 3)  # 64x80 upscaled x4, three panels
    expected = side_by_side(real[:1], dream[:1], 4)[0]
    assert np.abs(decoded[0].astype(int) - expected).mean() < 6  # real | dream | diff, in that order


def test_side_by_side_pads_odd_sizes_to_even(tmp_path):
    frames = np.stack([_scene(15, 21)] * 3)
    path = write_side_by_side(frames, frames, tmp_path / "odd.mp4", fps=5, scale=1)
    with imageio.get_reader(path) as reader:
        decoded = [frame for frame in reader]
    assert len(decoded) == 3 and decoded[0].shape == (16, 64, 3)
    with pytest.raises(EngineError, match="differ in shape"):
        side_by_side(frames, frames[:, :-1], 1)


def test_final_json_is_one_strict_line():
    result = {"psnr": {"model": {8: MetricStats(mean=math.inf, std=math.nan, count=np.int64(3))}},
              "values": np.array([1.5, np.inf, -np.inf, np.nan], dtype=np.float32), "ok": True, "horizons": (1, 8)}
    line = final_json(result)
    assert "\n" not in line
    data = json.loads(line)
    assert data["psnr"]["model"]["8"] == {"mean": "inf", "std": None, "count": 3, "n_capped": 0, "cap": None}
    assert data["values"] == [1.5, "inf", "-inf", None] and data["ok"] is True and data["horizons"] == [1, 8]
    with pytest.raises(TypeError):
        final_json({"x": object()})
