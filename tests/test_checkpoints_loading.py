"""Strict loading: fixture checkpoints into the Oasis networks, shared-tensor aliases, prefixes,
pickles read only with weights_only, and one-line errors that name the keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file, save_model
from torch import nn

from engine.checkpoints.loading import alias_groups, compare_shapes, load_into, read_state_dict
from engine.errors import CheckpointError
from tests.conftest import read_json

MARKER = Path("unpickled-marker")


class TiedPair(nn.Module):
    """Two submodules holding one Parameter (as the reference DiT shares its rotary `freqs`)."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(3, 4)
        self.second = nn.Linear(3, 4)
        self.second.weight = self.first.weight
        self.register_buffer("scale", torch.ones(4))


class Exploding:
    """Unpickling this would create a file: weights_only loading must never get that far."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __setstate__(self, state: dict) -> None:
        Path(state["marker"]).touch()


def single_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


@pytest.fixture(scope="module")
def dit_spec(oasis_dir) -> dict:
    return read_json(oasis_dir / "dit.json")


def test_fixture_dit_loads_with_aliases_absent_from_the_file(oasis_dir, dit_spec):
    from engine.families.oasis.dit import OasisDiT

    stored = load_file(oasis_dir / "dit.safetensors")
    aliases = dit_spec["shared_tensor_aliases_not_stored"]
    assert not set(aliases) & set(stored)
    model = OasisDiT(**dit_spec["kwargs"])
    load_into(model, oasis_dir / "dit.safetensors")
    state = model.state_dict()
    assert set(state) == set(stored) | set(aliases)
    for key, value in stored.items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0)
    for alias, source in aliases.items():
        torch.testing.assert_close(state[alias], stored[source], rtol=0, atol=0)


def test_prefixed_dit_error_names_the_prefix(oasis_dir, dit_spec):
    from engine.families.oasis.dit import OasisDiT

    stored = {f"model.{key}": value for key, value in load_file(oasis_dir / "dit.safetensors").items()}
    with pytest.raises(CheckpointError) as exc:
        load_into(OasisDiT(**dit_spec["kwargs"]), stored)
    assert "carry the prefix 'model.'" in single_line(exc)
    load_into(OasisDiT(**dit_spec["kwargs"]), stored, prefix="model.")


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_aliases_are_detected_from_the_module(dit_spec, device):
    from engine.families.oasis.dit import OasisDiT

    with torch.device(device):
        model = OasisDiT(**dit_spec["kwargs"])
    groups = {frozenset(group) for group in alias_groups(model)}
    expected: dict[str, set[str]] = {}
    for alias, source in dit_spec["shared_tensor_aliases_not_stored"].items():
        expected.setdefault(source, {source}).add(alias)
    assert groups == {frozenset(group) for group in expected.values()}


def test_fixture_vae_loads_strictly(oasis_dir):
    from engine.families.oasis.vae import OasisVAE

    model = OasisVAE(**read_json(oasis_dir / "vae.json")["kwargs"])
    load_into(model, oasis_dir / "vae.safetensors")
    stored = load_file(oasis_dir / "vae.safetensors")
    state = model.state_dict()
    assert set(state) == set(stored)
    for key, value in stored.items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0)


def test_meta_module_takes_the_file_tensors(oasis_dir, dit_spec):
    from engine.families.oasis.dit import OasisDiT

    with torch.device("meta"):
        model = OasisDiT(**dit_spec["kwargs"])
    load_into(model, oasis_dir / "dit.safetensors")
    stored = load_file(oasis_dir / "dit.safetensors")
    state = model.state_dict()
    assert not any(value.is_meta for value in state.values())
    for alias, source in dit_spec["shared_tensor_aliases_not_stored"].items():
        torch.testing.assert_close(state[alias], stored[source], rtol=0, atol=0)


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_handmade_tied_module_round_trips_through_save_model(tmp_path, device):
    source = TiedPair()
    path = tmp_path / "tied.safetensors"
    save_model(source, str(path))
    assert set(load_file(path)) == set(source.state_dict()) - {"second.weight"}
    with torch.device(device):
        target = TiedPair()
    load_into(target, path)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], value, rtol=0, atol=0)


def test_a_missing_untied_key_is_missing(tmp_path):
    state = TiedPair().state_dict()
    del state["first.weight"], state["second.weight"]
    with pytest.raises(CheckpointError) as exc:
        load_into(TiedPair(), state)
    message = single_line(exc)
    assert "first.weight" in message and "second.weight" in message


def test_error_names_missing_unexpected_and_wrong_shape_keys(tmp_path):
    state = {key: value.clone() for key, value in TiedPair().state_dict().items() if key != "second.weight"}
    state["first.bias"] = torch.zeros(5)
    state["extra.weight"] = torch.zeros(2, 2)
    del state["scale"]
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError) as exc:
        load_into(TiedPair(), path)
    message = single_line(exc)
    assert str(path) in message and "TiedPair" in message
    assert "1 missing (scale (4,))" in message
    assert "1 unexpected (extra.weight (2, 2))" in message
    assert "1 wrong shape (first.bias: expected (4,), found (5,))" in message


def test_compare_shapes_lists_every_kind():
    diff = compare_shapes({"a": (1, 2), "b": (3,), "c": (4,), "d": (4,)}, {"a": (2, 1), "x": (5,), "c": (4,)},
                          aliases=[("c", "d")])
    assert diff.missing == [("b", (3,))]
    assert diff.unexpected == [("x", (5,))]
    assert diff.wrong_shape == [("a", (1, 2), (2, 1))]
    assert diff.items() == ["missing b: expected (3,)", "unexpected x (5,)", "wrong shape a: expected (1, 2), found (2, 1)"]


def test_prefixed_file_loads_with_prefix_and_the_error_suggests_it(tmp_path):
    """DIAMOND-style files hold several networks side by side, each under its own prefix."""
    source = TiedPair()
    combined = {f"denoiser.{key}": value for key, value in source.state_dict().items()}
    combined |= {"actor_critic.lstm.weight": torch.zeros(2, 2)}
    path = tmp_path / "agent.pt"
    torch.save(combined, path)
    target = TiedPair()
    load_into(target, path, prefix="denoiser.")
    torch.testing.assert_close(target.first.weight, source.first.weight, rtol=0, atol=0)
    with pytest.raises(CheckpointError) as exc:
        load_into(TiedPair(), path)
    assert "prefix 'denoiser.'" in single_line(exc)
    with pytest.raises(CheckpointError) as exc:
        read_state_dict(path, prefix="model.")
    assert "no keys starting with 'model.'" in single_line(exc)


def test_lightning_checkpoint_is_unwrapped(tmp_path):
    source = TiedPair()
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": source.state_dict(), "epoch": 3, "global_step": 10}, path)
    assert set(read_state_dict(path)) == set(source.state_dict())


def test_pickle_with_a_custom_class_is_refused_without_running_it(tmp_path):
    marker = tmp_path / MARKER
    path = tmp_path / "unsafe.pt"
    with open(path, "wb") as stream:
        torch.save({"weight": torch.zeros(2), "config": Exploding(marker)}, stream)
    with open(path, "rb") as stream:  # the file really does run code when fully unpickled
        torch.load(stream, weights_only=False)
    assert marker.exists()
    marker.unlink()
    with pytest.raises(CheckpointError) as exc:
        read_state_dict(path)
    message = single_line(exc)
    assert str(path) in message and f"{__name__}.Exploding" in message and "convert" in message
    assert not marker.exists()


def test_non_tensor_entries_and_bad_files_are_named(tmp_path):
    path = tmp_path / "mixed.pt"
    torch.save({"weight": torch.zeros(2), "step": 3}, path)
    with pytest.raises(CheckpointError) as exc:
        read_state_dict(path)
    assert "entries step are not tensors" in single_line(exc)
    for name, content in (("broken.safetensors", b"\x00" * 16), ("broken.pt", b"not a pickle")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError) as exc:
            read_state_dict(tmp_path / name)
        assert name in single_line(exc)
    with pytest.raises(CheckpointError) as exc:
        read_state_dict(tmp_path / "absent.safetensors")
    assert "absent.safetensors does not exist" in single_line(exc)
    with pytest.raises(CheckpointError) as exc:
        read_state_dict(tmp_path / "weights.npz")
    assert "unknown suffix '.npz'" in single_line(exc)


def test_legacy_pickle_format_is_read(tmp_path):
    path = tmp_path / "legacy.pth"
    torch.save({"w": torch.arange(4.0)}, path, _use_new_zipfile_serialization=False)
    torch.testing.assert_close(read_state_dict(path)["w"], torch.arange(4.0))


class CallsSystem:
    """A pickle that would run a shell command (a global of a module torch blocks outright)."""

    def __reduce__(self):
        import os

        return (os.system, ("true",))


def test_refusals_name_the_global_and_never_suggest_unsafe_loading(tmp_path):
    path = tmp_path / "shell.pt"
    torch.save({"weight": torch.zeros(2), "run": CallsSystem()}, path)
    with pytest.raises(CheckpointError) as exc:
        read_state_dict(path)
    message = single_line(exc)
    assert "system" in message and "weights_only=False" not in message and "weights_only` set to `False" not in message


@pytest.mark.parametrize(("value", "fragment"), [
    (float("nan"), "holds NaN values"), (float("inf"), "holds infinite values"),
    (1e30, "holds values up to 1e+30, beyond +-1e+06"), ("int32", "is int32, expected floating-point weights"),
    ("bool", "is bool, expected floating-point weights")])
def test_weights_must_be_finite_floating_point(value, fragment):
    module = TiedPair()
    state = {key: tensor.clone() for key, tensor in module.state_dict().items()}
    key = next(iter(state))
    state[key] = state[key].to(getattr(torch, value)) if isinstance(value, str) else torch.full_like(state[key], value)
    with pytest.raises(CheckpointError) as exc:
        load_into(TiedPair(), state)
    assert f"{key} {fragment}" in single_line(exc)
