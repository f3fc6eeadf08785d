"""Shared test helpers: the reference fixture folder comes from WM_FIXTURES."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def fixture_root() -> Path:
    return Path(os.environ.get("WM_FIXTURES", PROJECT_ROOT.parent / "shared" / "fixtures")).resolve()


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    root = fixture_root()
    if not root.is_dir():
        pytest.fail(f"reference fixtures not found at {root}: set WM_FIXTURES to the fixture folder")
    return root


@pytest.fixture(scope="session")
def oasis_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "oasis"


@pytest.fixture(scope="session")
def diamond_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "diamond"


@pytest.fixture(scope="session")
def mar_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "worldmar"


@pytest.fixture(scope="session")
def mar_config(mar_dir: Path) -> dict:
    """The fixture WorldMAR's json: constructor arguments (`constructor_kwargs`) and the reference run's settings (`io`)."""
    return read_json(mar_dir / "model_small.json")


@pytest.fixture(scope="session")
def mar_io(mar_dir: Path) -> dict[str, torch.Tensor]:
    """Inputs and outputs of the reference WorldMAR run on the fixture model."""
    return load_file(mar_dir / "model_io.safetensors")


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def fixture_json(relative: str) -> dict:
    """A fixture json read at collection time (to parametrize over its cases); {} when the fixture folder lacks
    it, so that the tests needing it fail through `fixtures_dir` rather than the whole collection."""
    path = fixture_root() / relative
    return read_json(path) if path.is_file() else {}


def euler_case(cases: dict) -> str:
    """The name of the first DIAMOND sampler case of a fixture json that is plain Euler (order 1, no churn)."""
    return next(name for name, case in cases.items()
                if case["sampler_config"]["order"] == 1 and not case["sampler_config"]["s_churn"])


def churn_case(cases: dict) -> str:
    """The name of the first DIAMOND sampler case with churn (extra random draws), else the last case."""
    return next((name for name, case in cases.items() if case["sampler_config"]["s_churn"]), list(cases)[-1])


def load_sampler_dit(oasis_dir: Path, spec: dict):
    """The fixture DiT that `sampler.json` (spec) names, with its weights, in eval mode."""
    from safetensors.torch import load_file

    from engine.families.oasis.dit import OasisDiT

    model = OasisDiT(**read_json(oasis_dir / spec["dit_config"])["kwargs"]).eval()
    model.load_state_dict(load_file(oasis_dir / "dit.safetensors"), strict=False)
    return model


def settings_from(spec: dict):
    """The diffusion-forcing settings of `sampler.json`."""
    from engine.families.oasis.diffusion_forcing import DiffusionForcingSettings

    return DiffusionForcingSettings(
        ddim_steps=spec["ddim_steps"], stabilization_level=spec["stabilization_level"],
        noise_abs_max=spec["noise_abs_max"], max_noise_level=spec["max_noise_level"], max_frames=spec["max_frames"])


@pytest.fixture(scope="module")
def display():
    """A private Xvfb display for the window tests, set as DISPLAY while the module runs."""
    from tests.test_app_support import display_env, xvfb

    with xvfb() as name, display_env(name):
        yield name


@pytest.fixture(scope="module")
def world(tmp_path_factory, oasis_dir: Path) -> Path:
    """The tiny Oasis world with a VAE that paints flat patches (video-friendly), for the app tests."""
    from tests.test_app_support import flat_patch_world

    return flat_patch_world(tmp_path_factory.mktemp("world"), oasis_dir)


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.manual_seed(0)
    yield


HOST_TRANSFERS = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__")


def record_host_transfers(monkeypatch) -> list[str]:
    """From now on, every call of a tensor method that copies to the host is appended to the returned list
    (until `monkeypatch.undo()`)."""
    calls: list[str] = []
    for name in HOST_TRANSFERS:
        original = getattr(torch.Tensor, name)

        def recording(self, *args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, recording)
    return calls
