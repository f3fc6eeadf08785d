"""Vectorised retrieval against the WorldMAR retrieval_io fixtures and the per-pose reference loop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine.memory import retrieval
from engine.memory.reference_retrieval import in_fov_single, reference_retrieve


@pytest.fixture(scope="module")
def retrieval_io(fixtures_dir: Path) -> tuple[dict[str, torch.Tensor], dict]:
    folder = fixtures_dir / "worldmar"
    data = load_file(folder / "retrieval_io.safetensors")
    params = json.loads((folder / "retrieval.json").read_text())
    return data, {c["case"]: c for c in params["cases"]}


def _cases(data: dict[str, torch.Tensor]) -> list[str]:
    cases = sorted(key.removeprefix("target_pose_") for key in data if key.startswith("target_pose_"))
    assert cases
    return cases


def _args(data: dict[str, torch.Tensor], params: dict, case: str) -> dict:
    p = params[int(case)]
    return {"target_pose": data[f"target_pose_{case}"], "other_poses": data[f"other_poses_{case}"],
            "points": data[f"points_{case}"], "num_prev_frames": p["num_prev_frames"],
            "min_overlap": p["min_overlap"], "k": p["k"]}


def test_fov_constants_match_fixture(retrieval_io, fixtures_dir: Path):
    params = json.loads((fixtures_dir / "worldmar" / "retrieval.json").read_text())
    assert (params["fov_half_h"], params["fov_half_v"]) == (retrieval.FOV_HALF_H, retrieval.FOV_HALF_V)


def test_overlap_and_masks(retrieval_io):
    data, params = retrieval_io
    for case in _cases(data):
        args = _args(data, params, case)
        ov = retrieval.compute_overlap(args["target_pose"], args["other_poses"], args["points"])
        assert torch.equal(ov.target_in_fov, data[f"target_in_fov_{case}"]), case
        assert int(ov.target_in_fov.sum()) == params[int(case)]["target_visible_points"], case
        assert torch.equal(ov.count, data[f"overlap_count_{case}"]), case
        assert torch.equal(ov.ratio, data[f"overlap_ratio_{case}"]), case
        if f"candidate_in_fov_{case}" in data:
            _, others = retrieval.target_centred(args["target_pose"], args["other_poses"])
            full = retrieval.in_fov(args["points"], others)
            assert torch.equal(full, data[f"candidate_in_fov_{case}"]), case
            assert torch.equal(full[:, ov.target_in_fov], ov.candidate_in_fov), case


def test_selection_and_trace(retrieval_io):
    data, params = retrieval_io
    for case in _cases(data):
        args = _args(data, params, case)
        result = retrieval.retrieve(**args)
        assert torch.equal(result.indices, data[f"expected_indices_{case}"]), case
        confidence, remaining = result.active_trace
        assert torch.equal(confidence, data[f"trace_confidence_{case}"]), case
        assert torch.equal(remaining, data[f"trace_remaining_{case}"]), case


def test_reference_loop_matches_fixture(retrieval_io):
    data, params = retrieval_io
    for case in _cases(data):
        args = _args(data, params, case)
        assert torch.equal(reference_retrieve(**args), data[f"expected_indices_{case}"]), case
        target, _ = retrieval.target_centred(args["target_pose"], args["other_poses"])
        mask = in_fov_single(args["points"], target[:3], target[3], target[4])
        assert torch.equal(mask, data[f"target_in_fov_{case}"]), case


def test_points_in_sphere_uses_generator():
    a = retrieval.generate_points_in_sphere(500, 30.0, generator=torch.Generator().manual_seed(3))
    b = retrieval.generate_points_in_sphere(500, 30.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (500, 3)
    assert float(a.norm(dim=1).max()) <= 30.0
    torch.manual_seed(5)
    c = retrieval.generate_points_in_sphere(500, 30.0)
    torch.manual_seed(5)
    u = torch.rand(500), torch.rand(500), torch.rand(500)
    assert torch.allclose(c.norm(dim=1), 30.0 * u[0] ** (1 / 3), atol=1e-4)


def test_chunking_does_not_change_masks():
    gen = torch.Generator().manual_seed(1)
    points = retrieval.generate_points_in_sphere(700, 30.0, generator=gen)
    poses = torch.cat([torch.rand(53, 3, generator=gen) * 60 - 30,
                       torch.rand(53, 1, generator=gen) * 360 - 180,
                       torch.rand(53, 1, generator=gen) * 720 - 360], dim=1)
    full = retrieval.in_fov(points, poses)
    assert torch.equal(full, retrieval.in_fov(points, poses, chunk_elements=1000))


def _random_walk(n: int, gen: torch.Generator) -> torch.Tensor:
    steps = torch.cat([torch.randn(n, 3, generator=gen) * torch.tensor([1.0, 0.2, 1.0]),
                       torch.randn(n, 2, generator=gen) * torch.tensor([4.0, 15.0])], dim=1)
    poses = steps.cumsum(0)
    poses[:, 3] = poses[:, 3].clamp(-90, 90)
    return poses


def test_matches_reference_loop_on_random_poses():
    """Several hundred random stored poses (scattered and walked): identical selections and masks
    (they could differ only for points within float rounding of an FOV edge; none for these seeds)."""
    gen = torch.Generator().manual_seed(7)
    points = retrieval.generate_points_in_sphere(3000, 30.0, generator=gen)
    for trial in range(6):
        n = 150 + 50 * trial
        if trial % 2:
            poses = _random_walk(n + 1, gen)
        else:
            poses = torch.cat([torch.rand(n + 1, 3, generator=gen) * 80 - 40,
                               torch.rand(n + 1, 1, generator=gen) * 180 - 90,
                               torch.rand(n + 1, 1, generator=gen) * 360 - 180], dim=1)
        target, others = poses[-1], poses[:-1]
        for num_prev, k, min_overlap in ((1, 4, 0.0), (2, 6, 0.05)):
            expected = reference_retrieve(target, others, points, num_prev, min_overlap, k)
            got = retrieval.retrieve(target, others, points, num_prev, min_overlap, k).indices
            assert torch.equal(got, expected), (trial, num_prev)
        t, o = retrieval.target_centred(target, others)
        visible = points[in_fov_single(points, t[:3], t[3], t[4])]
        loop = torch.stack([in_fov_single(visible, p[:3], p[3], p[4]) for p in o])
        assert torch.equal(retrieval.in_fov(visible, o), loop), trial
        overlap = retrieval.compute_overlap(target, others, points)
        assert torch.equal(overlap.candidate_in_fov, loop), trial  # culling never drops a visible pair
