"""ONNX export of the WorldMAR calls of a MAR frame (conditioning, masked encoder/decoder step, diffusion head)
at fixture size (fixtures/worldmar/model_small), checked in onnxruntime against PyTorch; the step graph takes
the hidden-token mask as an input, and the head is exported at the largest reveal group (the sampler pads
every group to it), so every MAR iteration runs through the same exported graphs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine.backends.export import check_onnx, export_all, onnx_session
from engine.families.worldmar.exports import mar_inputs, worldmar_exports
from engine.families.worldmar.mar import largest_group, reveal_schedule
from engine.families.worldmar.model import WorldMAR, load_reference_checkpoint
from engine.families.worldmar.units import MARStep
from tests.conftest import read_json

ATOL = 1e-4


@pytest.fixture(scope="module")
def model(fixtures_dir: Path) -> WorldMAR:
    folder = fixtures_dir / "worldmar"
    with torch.device("meta"):
        net = WorldMAR.from_reference_kwargs(read_json(folder / "model_small.json")["constructor_kwargs"])
    net.to_empty(device="cpu")
    load_reference_checkpoint(net, folder / "model_small.safetensors")
    return net.eval()


@pytest.fixture(scope="module")
def frames(fixtures_dir: Path) -> int:
    return load_file(fixtures_dir / "worldmar" / "model_io.safetensors")["eval_dec_out"].shape[1]


@pytest.fixture(scope="module")
def exported(model: WorldMAR, frames: int, tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("worldmar_onnx")
    return folder, export_all(worldmar_exports(model, frames), folder, ATOL)


def test_every_worldmar_call_exports_with_torch_export_and_matches_pytorch(exported) -> None:
    _, results = exported
    assert set(results) == {"mar_condition", "mar_step", "mar_head"}
    for result in results.values():
        assert result["exporter"] == "dynamo" and result["max_abs_diff"] <= ATOL


def test_step_graph_serves_every_mar_iteration(model: WorldMAR, frames: int, exported) -> None:
    folder, _ = exported
    for _, hidden_before in reveal_schedule(model.frame_tokens, 4)[1:]:
        step = mar_inputs(model, frames, 1, hidden_count=hidden_before, seed=hidden_before)["step"]
        assert int(step[3].sum()) == hidden_before
        assert check_onnx(folder / "mar_step.onnx", MARStep(model), step, ATOL) <= ATOL


def test_head_graph_has_the_rows_of_the_largest_group(model: WorldMAR, exported) -> None:
    folder, _ = exported
    rows = largest_group(model.frame_tokens, 4)
    assert rows > reveal_schedule(model.frame_tokens, 4)[0][1] - reveal_schedule(model.frame_tokens, 4)[0][0]
    assert [arg.shape for arg in onnx_session(folder / "mar_head.onnx").get_inputs()] == [
        [rows, model.token_dim], [rows], [rows, model.diffloss.net.cond_embed.in_features]]
