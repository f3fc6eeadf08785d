"""FOV-overlap kernel (kernels/fov_overlap.py) against its PyTorch reference, which is checked against
the WorldMAR fixtures and the per-pose reference loop.

The PyTorch half always runs. The Triton kernel runs on a CUDA GPU, or on the CPU through Triton's
interpreter (TRITON_INTERPRET=1, in a subprocess so the interpreted kernel does not leak into this
process); each is skipped with its reason where it cannot run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine.memory import retrieval
from engine.memory.reference_retrieval import in_fov_single
from kernels.fov_overlap import fov_overlap_counts_reference
from tests.conftest import PROJECT_ROOT
from tests.triton_support import needs_gpu, needs_triton


def fixture_cases(folder: Path) -> list[dict]:
    data = load_file(folder / "retrieval_io.safetensors")
    params = {c["case"]: c for c in json.loads((folder / "retrieval.json").read_text())["cases"]}
    cases = []
    for key in sorted(k for k in data if k.startswith("target_pose_")):
        case = key.removeprefix("target_pose_")
        p = params[int(case)]
        cases.append({"case": case, "target": data[key], "others": data[f"other_poses_{case}"],
                      "points": data[f"points_{case}"], "count": data[f"overlap_count_{case}"],
                      "expected": data[f"expected_indices_{case}"], "num_prev_frames": p["num_prev_frames"],
                      "min_overlap": p["min_overlap"], "k": p["k"],
                      "trace_confidence": data[f"trace_confidence_{case}"],
                      "trace_remaining": data[f"trace_remaining_{case}"]})
    assert cases
    return cases


def kernel_inputs(target: torch.Tensor, others: torch.Tensor, points: torch.Tensor):
    """Target-centred forms of the candidates and the target's mask as weights."""
    t, o = retrieval.target_centred(target, others)
    weights = retrieval.fov_mask(points, t[None])[0]
    return (points, *retrieval.linear_forms(o), weights)


def clear_of_edges(points: torch.Tensor, poses: torch.Tensor, margin: float = 1e-3, min_dist: float = 0.5) -> torch.Tensor:
    """Points no camera sees within `margin` degrees of an FOV edge or closer than `min_dist` blocks (the
    fixtures' rule), so any correct float32 test classifies them alike."""
    keep = torch.ones(points.shape[0], dtype=torch.bool)
    for pose in poses.double():
        v = points.double() - pose[:3]
        az = torch.rad2deg(torch.atan2(v[:, 0], v[:, 2]))
        el = torch.rad2deg(torch.atan2(v[:, 1], torch.hypot(v[:, 0], v[:, 2])))
        da = torch.remainder(az - pose[4], 360)
        de = torch.remainder(el - pose[3], 360)
        da, de = torch.minimum(da, 360 - da), torch.minimum(de, 360 - de)
        keep &= ((da - retrieval.FOV_HALF_H).abs() > margin) & ((de - retrieval.FOV_HALF_V).abs() > margin)
        keep &= v.norm(dim=1) > min_dist
    return keep


def random_scene(seed: int, num_poses: int, num_points: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    poses = torch.cat([torch.rand(num_poses + 1, 3, generator=gen) * 80 - 40,
                       torch.rand(num_poses + 1, 1, generator=gen) * 180 - 90,
                       torch.rand(num_poses + 1, 1, generator=gen) * 720 - 360], dim=1)
    points = retrieval.generate_points_in_sphere(num_points, 30.0, generator=gen)
    t, o = retrieval.target_centred(poses[-1], poses[:-1])
    points = points[clear_of_edges(points, torch.cat([t[None], o]))]
    return poses[-1], poses[:-1], points


def loop_counts(target: torch.Tensor, others: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    t, o = retrieval.target_centred(target, others)
    seen = in_fov_single(points, t[:3], t[3], t[4])
    return torch.stack([(in_fov_single(points, p[:3], p[3], p[4]) & seen).sum() for p in o])


def test_reference_counts_match_fixture(fixtures_dir: Path):
    for c in fixture_cases(fixtures_dir / "worldmar"):
        counts = fov_overlap_counts_reference(*kernel_inputs(c["target"], c["others"], c["points"]))
        assert counts.dtype == torch.float32
        assert torch.equal(counts.to(torch.int64), c["count"]), c["case"]


def test_reference_matches_per_pose_loop():
    target, others, points = random_scene(11, 120, 1500)
    counts = fov_overlap_counts_reference(*kernel_inputs(target, others, points))
    assert torch.equal(counts.to(torch.int64), loop_counts(target, others, points))
    assert int(counts.sum()) > 0


def test_cpu_tensors_use_the_torch_path():
    points = torch.zeros(4, 3)
    assert not retrieval.use_kernel(points, "auto")
    assert not retrieval.use_kernel(points, "torch")
    with pytest.raises(ValueError, match="backend must be one of"):
        retrieval.use_kernel(points, "cuda")
    if os.environ.get("TRITON_INTERPRET") != "1":
        with pytest.raises(RuntimeError, match="Triton FOV kernel needs"):
            retrieval.use_kernel(points, "triton")


INTERPRETED_PAIRS = 300_000  # the largest case (candidates x points) the interpreter runs
INTERPRETER_CHECK = textwrap.dedent("""
    import json, sys
    import torch
    from engine.memory import retrieval
    from kernels.fov_overlap import fov_overlap_counts, fov_overlap_counts_reference
    from tests.test_kernels_fov import fixture_cases, kernel_inputs, random_scene
    from pathlib import Path

    report = {}
    for c in fixture_cases(Path(sys.argv[1])):
        if c["others"].shape[0] * c["points"].shape[0] > int(sys.argv[2]):
            continue  # the interpreter runs Python per tile; the small cases cover the same code
        inputs = kernel_inputs(c["target"], c["others"], c["points"])
        got = fov_overlap_counts(*inputs)
        result = retrieval.retrieve(c["target"], c["others"], c["points"], c["num_prev_frames"], c["min_overlap"],
                                    c["k"], backend="triton")
        confidence, remaining = result.active_trace
        report[c["case"]] = [torch.equal(got, fov_overlap_counts_reference(*inputs)),
                             torch.equal(got.long(), c["count"]), torch.equal(result.indices, c["expected"]),
                             torch.equal(confidence, c["trace_confidence"]),
                             torch.equal(remaining, c["trace_remaining"])]
    inputs = kernel_inputs(*random_scene(12, 70, 900))
    report["random"] = [torch.equal(fov_overlap_counts(*inputs), fov_overlap_counts_reference(*inputs))]
    print(json.dumps(report))
""")


@needs_triton
def test_kernel_in_triton_interpreter(fixtures_dir: Path):
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join(
        [str(PROJECT_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run([sys.executable, "-c", INTERPRETER_CHECK, str(fixtures_dir / "worldmar"),
                           str(INTERPRETED_PAIRS)], capture_output=True, text=True, env=env, cwd=PROJECT_ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    small = {c["case"] for c in fixture_cases(fixtures_dir / "worldmar")
             if c["others"].shape[0] * c["points"].shape[0] <= INTERPRETED_PAIRS}
    assert set(report) == small | {"random"}
    assert all(all(checks) for checks in report.values()), report


@needs_gpu
def test_kernel_on_gpu(fixtures_dir: Path):
    from kernels.fov_overlap import fov_overlap_counts

    cuda = torch.device("cuda")
    for c in fixture_cases(fixtures_dir / "worldmar"):
        inputs = [t.to(cuda) for t in kernel_inputs(c["target"], c["others"], c["points"])]
        got = fov_overlap_counts(*inputs)
        assert torch.equal(got, fov_overlap_counts_reference(*inputs)), c["case"]
        assert torch.equal(got.long().cpu(), c["count"]), c["case"]
        args = (c["target"].to(cuda), c["others"].to(cuda), c["points"].to(cuda), c["num_prev_frames"],
                c["min_overlap"], c["k"])
        result = retrieval.retrieve(*args, backend="triton")
        assert torch.equal(result.indices.cpu(), c["expected"]), c["case"]
        confidence, remaining = result.active_trace
        assert torch.equal(confidence.cpu(), c["trace_confidence"]), c["case"]
        assert torch.equal(remaining.cpu(), c["trace_remaining"]), c["case"]
    inputs = [t.to(cuda) for t in kernel_inputs(*random_scene(13, 3000, 6000))]
    assert torch.equal(fov_overlap_counts(*inputs), fov_overlap_counts_reference(*inputs))
