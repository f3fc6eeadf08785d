"""Pose math and Plücker maps against the WorldMAR plucker_io fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from engine.memory import pose


@pytest.fixture(scope="module")
def plucker_io(fixtures_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    path = fixtures_dir / "worldmar" / "plucker_io.safetensors"
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    return load_file(path), metadata


def _intrinsics(meta: dict[str, str], prefix: str = "") -> dict:
    return {"focal_length": float(meta[f"{prefix}focal_length"]), "image_width": int(meta[f"{prefix}image_width"]),
            "image_height": int(meta[f"{prefix}image_height"])}


def _curr_frames(data: dict[str, torch.Tensor], prefix: str) -> list[tuple[str, int]]:
    found = []
    for key in data:
        if key.startswith(prefix):
            tag = key[len(prefix):]
            found.append((key, -int(tag[1:]) if tag.startswith("m") else int(tag)))
    assert found
    return found


def test_matrices(plucker_io):
    data, _ = plucker_io
    poses = data["poses"]
    torch.testing.assert_close(pose.rotation_matrix(poses[..., 3], poses[..., 4]), data["rotation"], atol=1e-5, rtol=0)
    torch.testing.assert_close(pose.camera_to_world(poses), data["c2w"], atol=1e-5, rtol=0)
    torch.testing.assert_close(pose.reference_camera_to_world(poses), data["c2w"], atol=1e-5, rtol=0)
    torch.testing.assert_close(pose.world_to_camera(data["c2w"]), data["w2c"], atol=1e-5, rtol=0)
    torch.testing.assert_close(pose.reference_camera_to_world(data["single_pose"]), data["single_c2w"], atol=1e-5,
                               rtol=0)


def test_relative_poses(plucker_io):
    data, _ = plucker_io
    for key, curr in _curr_frames(data, "rel_c2w_curr"):
        torch.testing.assert_close(pose.relative_pose(data["c2w"], curr), data[key], atol=1e-5, rtol=0)


def test_plucker_token_grid(plucker_io):
    data, meta = plucker_io
    for key, curr in _curr_frames(data, "plucker_sub_curr"):
        out = pose.plucker(data["c2w"], curr, **_intrinsics(meta), token_grid=True)
        torch.testing.assert_close(out, data[key], atol=1e-4, rtol=0)


def test_plucker_full_resolution(plucker_io):
    data, meta = plucker_io
    intr = _intrinsics(meta)
    full = pose.plucker(data["c2w"], 0, **intr)
    h, w = intr["image_height"], intr["image_width"]
    assert full.shape == (*data["c2w"].shape[:2], h, w, 6)
    torch.testing.assert_close(full[:, 0, 0], data["plucker_full_row0_curr0"], atol=1e-4, rtol=0)
    torch.testing.assert_close(full[:, 0, :, -1], data["plucker_full_col639_curr0"], atol=1e-4, rtol=0)
    ch, cw = data["plucker_full_center_curr0"].shape[2:4]
    r0, c0 = h // 2 - ch // 2, w // 2 - cw // 2
    torch.testing.assert_close(full[:, :, r0:r0 + ch, c0:c0 + cw], data["plucker_full_center_curr0"], atol=1e-4,
                               rtol=0)
    small = pose.plucker(data["c2w"], 0, **_intrinsics(meta, "small_"))
    torch.testing.assert_close(small, data["plucker_small_curr0"], atol=1e-4, rtol=0)


def test_dataloader_path_is_constant(plucker_io):
    """The reference dataloader's `(T, 5)` call makes every relative pose the identity (quirk P1)."""
    data, meta = plucker_io
    c2w = pose.reference_camera_to_world(data["dl_poses"])
    torch.testing.assert_close(c2w, data["dl_c2w"], atol=1e-5, rtol=0)
    rel = pose.relative_pose(c2w, 0)
    torch.testing.assert_close(rel, data["dl_rel_c2w"], atol=1e-5, rtol=0)
    out = pose.plucker(c2w, 0, **_intrinsics(meta), token_grid=True).squeeze(0)
    torch.testing.assert_close(out, data["dl_plucker_sub"], atol=1e-4, rtol=0)
