"""Shared test helpers: the reference fixture folder comes from WM_FIXTURES."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

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


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.manual_seed(0)
    yield
