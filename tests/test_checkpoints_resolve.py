"""Where a world's checkpoint files are found, in order: explicit path, user path in the world file,
the world file's folder, `<project>/checkpoints/<world>/` (cache and hub: test_checkpoints_download)."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from engine.checkpoints.download import hub_cli
from engine.checkpoints.resolve import is_user_path, resolve_checkpoint_files
from engine.errors import CheckpointError

REPO = "test-org/never-published"


def world(folder: Path, files: dict[str, str], repo: str | None = REPO):
    checkpoints = {"files": files} | ({"repo": repo} if repo else {})
    return OmegaConf.create({"name": "resolve-test", "source_dir": str(folder), "checkpoints": checkpoints})


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"weights")
    return path


@pytest.fixture
def layout(tmp_path) -> tuple[Path, Path]:
    """(world folder, project root)"""
    return tmp_path / "world", tmp_path / "project"


def test_user_paths_are_relative_to_the_world_file(layout, tmp_path):
    folder, project = layout
    own = touch(folder / "my" / "dit.safetensors")
    absolute = touch(tmp_path / "elsewhere" / "vae.safetensors")
    cfg = world(folder, {"dit": "./my/dit.safetensors", "vae": str(absolute)})
    assert resolve_checkpoint_files(cfg, project_root=project, allow_download=False) == {"dit": own, "vae": absolute}


def test_explicit_paths_win(layout, tmp_path):
    folder, project = layout
    touch(folder / "dit.safetensors")
    mine = touch(tmp_path / "mine.safetensors")
    cfg = world(folder, {"dit": "dit.safetensors"})
    assert resolve_checkpoint_files(cfg, {"dit": mine}, project_root=project) == {"dit": mine}


def test_world_folder_then_project_checkpoints(layout):
    folder, project = layout
    in_project = touch(project / "checkpoints" / "resolve-test" / "sub" / "dit.safetensors")
    cfg = world(folder, {"dit": "sub/dit.safetensors"})
    assert resolve_checkpoint_files(cfg, project_root=project, allow_download=False) == {"dit": in_project}
    beside = touch(folder / "sub" / "dit.safetensors")
    assert resolve_checkpoint_files(cfg, project_root=project, allow_download=False) == {"dit": beside}


@pytest.mark.parametrize(("explicit", "files", "expected"), [
    ({"dit": "absent.safetensors"}, {"dit": "dit.safetensors"},
     "checkpoint given for 'dit': absent.safetensors does not exist"),
    ({"dti": "x.safetensors"}, {"dit": "dit.safetensors"},
     "world 'resolve-test' has no checkpoint role dti: its roles are dit"),
    (None, {"dit": "./gone/dit.safetensors"}, "checkpoints.files.dit of world 'resolve-test': "),
])
def test_bad_paths_are_one_line_errors(layout, explicit, files, expected):
    folder, project = layout
    with pytest.raises(CheckpointError) as exc:
        resolve_checkpoint_files(world(folder, files), explicit, project_root=project, allow_download=False)
    assert "\n" not in str(exc.value) and expected in str(exc.value)


def test_missing_files_without_downloads_name_the_command(layout, monkeypatch):
    folder, project = layout
    touch(folder / "vae.safetensors")
    monkeypatch.chdir(project.parent)
    cfg = world(folder, {"dit": "dit.safetensors", "vae": "vae.safetensors", "head": "head.safetensors"})
    with pytest.raises(CheckpointError) as exc:
        resolve_checkpoint_files(cfg, project_root=project, allow_download=False)
    assert str(exc.value) == (
        "missing dit.safetensors, head.safetensors for world 'resolve-test' (downloads are off): download them "
        f"with: {hub_cli()} download {REPO} dit.safetensors head.safetensors --local-dir "
        "project/checkpoints/resolve-test (or pass --weights dit=PATH --weights head=PATH)")


def test_a_world_without_repo_says_where_to_put_files(layout):
    folder, project = layout
    with pytest.raises(CheckpointError) as exc:
        resolve_checkpoint_files(world(folder, {"dit": "dit.safetensors"}, repo=None), project_root=project)
    assert "the world names no checkpoints.repo" in str(exc.value)
    assert f"put them in {project / 'checkpoints' / 'resolve-test'}" in str(exc.value)


@pytest.mark.parametrize(("entry", "user"), [("./a.pt", True), ("../a.pt", True), ("~/a.pt", True),
                                             ("/abs/a.pt", True), ("a.pt", False), ("atari_100k/models/Pong.pt", False)])
def test_user_paths_versus_repo_files(entry, user):
    assert is_user_path(entry) is user
