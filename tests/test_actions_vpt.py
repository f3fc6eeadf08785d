"""VPT action vectors against the open-oasis fixtures, action streams, and keyboard/mouse keymaps."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from engine.actions.keymap import KEY_NAMES, MOUSE_BUTTON_NAMES, Keymap
from engine.actions.vpt import (
    ACTION_KEYS,
    PITCH_COLUMN,
    YAW_COLUMN,
    camera_bin,
    camera_value,
    load_action_stream,
    one_hot_from_dicts,
    read_action_rows,
    read_actions_jsonl,
)
from engine.errors import ConfigError
from tests.conftest import fixture_root

VPT_DIR = fixture_root() / "oasis" / "vpt"
JSONL_FILES = sorted(VPT_DIR.glob("*.actions.jsonl"))
SHIPPED_FILES = sorted(VPT_DIR.glob("*.shipped_one_hot.safetensors"))


def _stem(path: Path, suffix: str) -> str:
    return path.name[: -len(suffix)]


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


def _single_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def _action(**overrides: object) -> dict:
    action: dict = {key: 0 for key in ACTION_KEYS if not key.startswith("camera")}
    action["camera"] = [40, 40]
    action.update(overrides)
    return action


def test_fixture_files_found() -> None:
    assert len(JSONL_FILES) >= 1 and len(SHIPPED_FILES) >= 1, f"no VPT fixtures under {VPT_DIR}"


@pytest.mark.parametrize("path", JSONL_FILES, ids=lambda p: p.name)
def test_one_hot_matches_reference_bit_for_bit(path: Path) -> None:
    stem = _stem(path, ".actions.jsonl")
    ours = one_hot_from_dicts(read_actions_jsonl(path))
    expected = load_file(str(path.with_name(f"{stem}.one_hot.safetensors")))["one_hot"]
    assert ours.dtype == torch.float32 and ours.shape == expected.shape
    assert torch.equal(_bits(ours), _bits(expected))
    shipped = path.with_name(f"{stem}.shipped_one_hot.safetensors")
    if shipped.is_file():
        assert torch.equal(_bits(ours), _bits(load_file(str(shipped))["one_hot"]))


@pytest.mark.parametrize("path", SHIPPED_FILES, ids=lambda p: p.name)
def test_shipped_one_hot_files_load_as_streams(path: Path) -> None:
    rows = load_file(str(path))["one_hot"]
    stream = load_action_stream(path, len(rows) + 1)
    assert stream.shape == (len(rows) + 1, len(ACTION_KEYS))
    assert torch.equal(stream[0], torch.zeros(len(ACTION_KEYS)))
    assert torch.equal(stream[1:], rows)


def test_stream_reproduces_sampler_fixture_actions(oasis_dir: Path) -> None:
    settings = json.loads((oasis_dir / "sampler.json").read_text())
    expected = load_file(str(oasis_dir / "sampler_io.safetensors"))["actions"]
    for b, source in enumerate(settings["action_sources"]):
        name = source["file"].replace(".one_hot_actions.pt", ".shipped_one_hot.safetensors")
        stream = load_action_stream(oasis_dir / "vpt" / name, settings["total_frames"], source["action_offset"])
        assert torch.equal(stream, expected[b])


def test_stream_alignment_from_jsonl() -> None:
    path = JSONL_FILES[0]
    rows = one_hot_from_dicts(read_actions_jsonl(path))
    stream = load_action_stream(path, 16, offset=7)
    assert stream.shape == (16, 25) and stream.dtype == torch.float32
    assert torch.equal(stream[0], torch.zeros(25))
    assert torch.equal(stream[1:], rows[7:22])


def test_stream_too_short_names_file_and_counts() -> None:
    path = JSONL_FILES[0]
    rows = len(read_actions_jsonl(path))
    load_action_stream(path, rows + 1)
    with pytest.raises(ConfigError) as exc:
        load_action_stream(path, rows, offset=5)
    message = _single_line(exc)
    assert str(path) in message and f"has {rows} rows" in message and f"need {rows + 4}" in message


def test_camera_normalisation_examples() -> None:
    bins = np.array([40, 41, 37, 0, 80])
    values = camera_value(bins)
    assert values.dtype == np.float32
    assert values.tolist() == np.array([0.0, 0.025, -0.075, -1.0, 1.0], dtype=np.float32).tolist()
    row = one_hot_from_dicts([_action(camera=[37, 41], forward=1)])[0]
    assert row[PITCH_COLUMN] == np.float32(-0.075) and row[YAW_COLUMN] == np.float32(0.025)
    assert row[ACTION_KEYS.index("forward")] == 1 and row.sum() == np.float32(1 - 0.075 + 0.025)


@pytest.mark.parametrize(("line", "fragment"), [
    ('{"forward": 1,', "not valid JSON"),
    (json.dumps({k: v for k, v in _action().items() if k != "jump"}), "missing key 'jump'"),
    (json.dumps(_action(camera=[40, 81])), "cameraY bin 81 is out of range"),
    (json.dumps(_action(camera=[40])), "'camera' must be [pitch_bin, yaw_bin]"),
    (json.dumps(_action(attack=2)), "'attack' must be 0 or 1"),
    (json.dumps(_action(use="yes")), "'use' must be 0 or 1"),
    ("[1, 2, 3]", "expected a JSON object"),
])
def test_bad_jsonl_line_gives_one_line_error(tmp_path: Path, line: str, fragment: str) -> None:
    path = tmp_path / "bad.actions.jsonl"
    path.write_text("\n".join([json.dumps(_action()), "", line, json.dumps(_action())]) + "\n")
    with pytest.raises(ConfigError) as exc:
        read_actions_jsonl(path)
    message = _single_line(exc)
    assert message.startswith(f"{path}:3: ") and fragment in message


def test_one_hot_from_dicts_validates_rows() -> None:
    with pytest.raises(ConfigError, match=r"action 1: 'camera' cameraX bin -3"):
        one_hot_from_dicts([_action(), _action(camera=[-3, 40])])


def test_other_action_sources(tmp_path: Path) -> None:
    rows = one_hot_from_dicts(read_actions_jsonl(JSONL_FILES[0]))[:30]
    torch.save(rows.clone(), tmp_path / "a.one_hot_actions.pt")
    assert torch.equal(load_action_stream(tmp_path / "a.one_hot_actions.pt", 5)[1:], rows[:4])
    torch.save([_action(), _action(camera=[41, 40])], tmp_path / "a.actions.pt")
    assert torch.equal(load_action_stream(tmp_path / "a.actions.pt", 3)[1:],
                       one_hot_from_dicts([_action(), _action(camera=[41, 40])]))
    torch.save([{"camera": np.array([40, 40])}], tmp_path / "b.actions.pt")
    with pytest.raises(ConfigError, match=r"convert them to \.jsonl"):
        load_action_stream(tmp_path / "b.actions.pt", 2)

    recorded = rows.numpy().copy()
    np.savez(tmp_path / "rec.npz", actions=recorded, frames=np.zeros((30, 2, 2, 3), np.uint8))
    stream = load_action_stream(tmp_path / "rec.npz", 10, offset=3)
    assert torch.equal(stream, rows[3:13]), "recordings are frame-aligned: no zero row is prepended"
    assert read_action_rows(tmp_path / "rec.npz")[1] is True

    save_file({"other": rows}, str(tmp_path / "x.safetensors"))
    with pytest.raises(ConfigError, match="no tensor 'one_hot'"):
        load_action_stream(tmp_path / "x.safetensors", 2)
    save_file({"one_hot": rows[:, :10].contiguous()}, str(tmp_path / "y.safetensors"))
    with pytest.raises(ConfigError, match=r"shape \(30, 10\), expected \(N, 25\)"):
        load_action_stream(tmp_path / "y.safetensors", 2)
    (tmp_path / "z.csv").write_text("1,2\n")
    with pytest.raises(ConfigError, match=r"unknown type '\.csv'"):
        load_action_stream(tmp_path / "z.csv", 2)
    with pytest.raises(ConfigError, match="does not exist"):
        load_action_stream(tmp_path / "missing.jsonl", 2)


@pytest.mark.parametrize(("actions", "fragment"), [
    (np.full((8, 25), "left"), "has dtype <U4, expected numbers"),
    (np.full((8, 25), np.nan, np.float32), "must be finite numbers"),
    (np.full((8, 25), 1e30, np.float32), "must lie within +-100"),
])
def test_recording_action_rows_are_numbers_in_range(tmp_path: Path, actions: np.ndarray, fragment: str) -> None:
    np.savez(tmp_path / "rec.npz", actions=actions)
    with pytest.raises(ConfigError) as exc:
        read_action_rows(tmp_path / "rec.npz")
    message = _single_line(exc)
    assert "rec.npz" in message and fragment in message


def test_damaged_npz_action_files_are_one_line(tmp_path: Path) -> None:
    np.savez(tmp_path / "rec.npz", actions=np.zeros((64, 25), np.float32))
    data = (tmp_path / "rec.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    np.save(tmp_path / "single.npy", np.zeros((4, 25)))
    (tmp_path / "single.npy").rename(tmp_path / "single.npz")
    for name, fragment in (("cut.npz", "not a readable .npz recording"), ("single.npz", "single .npy array")):
        with pytest.raises(ConfigError) as exc:
            read_action_rows(tmp_path / name)
        message = _single_line(exc)
        assert name in message and fragment in message


# --- keymaps ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def keymap() -> Keymap:
    return Keymap.load("minecraft")


def _columns(action: torch.Tensor) -> set[str]:
    return {ACTION_KEYS[i] for i in torch.nonzero(action).flatten().tolist()}


def test_keys_and_buttons_set_their_columns(keymap: Keymap) -> None:
    expected = {"w": "forward", "s": "back", "a": "left", "d": "right", "space": "jump", "left shift": "sneak",
                "left ctrl": "sprint", "e": "inventory", "g": "drop", "f": "swapHands",
                **{str(i): f"hotbar.{i}" for i in range(1, 10)}}
    for key, column in expected.items():
        action = keymap.to_action({key}, set(), 0.0, 0.0)
        assert action.shape == (25,) and action.dtype == torch.float32
        assert _columns(action) == {column}, key
    for button, column in {"left": "attack", "right": "use", "middle": "pickItem"}.items():
        assert _columns(keymap.to_action(set(), {button}, 0.0, 0.0)) == {column}
    action = keymap.to_action({"w", "space", "escape", "unbound"}, {"left", "x1"}, 0.0, 0.0)
    assert _columns(action) == {"forward", "jump", "attack"}
    assert torch.equal(keymap.to_action(set(), set(), 0.0, 0.0), torch.zeros(25))


@pytest.mark.parametrize(("dx", "dy", "pitch_bin", "yaw_bin"), [
    (0, 0, 40, 40),
    (1, 1, 40, 40),            # 0.15 deg: less than half a bin
    (2, -2, 39, 41),           # 0.30 deg -> 1 bin; mouse up = look up = pitch bin below 40
    (10, 0, 40, 43),           # 1.5 deg right -> yaw +3 bins
    (0, 10, 43, 40),           # mouse down -> look down -> pitch +3 bins
    (-100, 50, 55, 10),        # -15 deg yaw, +7.5 deg pitch
    (1000, -1000, 0, 80),      # clamped to +-20 deg
])
def test_mouse_motion_bins(keymap: Keymap, dx: float, dy: float, pitch_bin: int, yaw_bin: int) -> None:
    assert keymap.camera_bins(dx, dy) == (pitch_bin, yaw_bin)
    action = keymap.to_action(set(), set(), dx, dy)
    assert action[PITCH_COLUMN] == torch.tensor(camera_value(pitch_bin))
    assert action[YAW_COLUMN] == torch.tensor(camera_value(yaw_bin))
    assert action[PITCH_COLUMN] == (pitch_bin - 40) / 40 and action[YAW_COLUMN] == (yaw_bin - 40) / 40


def test_camera_bin_rounding_is_symmetric() -> None:
    assert [camera_bin(d) for d in (0.24, 0.25, -0.25, 0.75, -0.75, 19.9, 25.0, -25.0)] == [40, 41, 39, 42, 38, 80, 80, 0]
    assert camera_bin(3.0, bin_degrees=0.5, max_degrees=2.0) == 44


def test_camera_settings_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("extends: minecraft\nkeys: {g: null, up: forward}\n"
                    "camera: {sensitivity: 1.0, max_degrees: 5, invert_y: true}\n")
    keymap = Keymap.load(path)
    assert keymap.camera_bins(3, 3) == (34, 46)          # inverted y; 3 deg = 6 bins
    assert keymap.camera_bins(100, -100) == (50, 50)     # clamped to 5 deg
    assert _columns(keymap.to_action({"g"}, set(), 0, 0)) == set()
    assert _columns(keymap.to_action({"up", "w"}, {"left"}, 0, 0)) == {"forward", "attack"}


@pytest.mark.parametrize(("text", "fragment"), [
    ("keys: {wasd: forward}\n", "keys.'wasd' is not an input name"),
    ("keys: {w: forwards}\n", "keys.'w' -> 'forwards' is not an action column"),
    ("keys: {w: cameraX}\n", "the camera columns are driven by the mouse"),
    ("mouse_buttons: {thumb: attack}\n", "mouse_buttons.'thumb' is not an input name"),
    ("keys: {w: forward\n", "bad YAML"),
    ("keys: [w]\n", "'keys' must be a mapping"),
    ("buttons: {left: attack}\n", "unknown section 'buttons'"),
    ("camera: {sensitivity: -1}\n", "camera.sensitivity must be a positive finite number"),
    ("camera: {sensitivity: .inf}\n", "camera.sensitivity must be a positive finite number"),
    ("camera: {invert_y: maybe}\n", "camera.invert_y must be true or false"),
    ("camera: {speed: 2}\n", "camera.speed is unknown"),
    ("action_space: chess\n", "action_space 'chess' is unknown"),
    ("keys: {yes: jump}\n", "quote it"),
])
def test_bad_keymap_gives_one_line_error(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        Keymap.load(path)
    message = _single_line(exc)
    assert str(path) in message and fragment in message


def test_bad_entry_in_base_keymap_names_the_base_file(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("keys: {w: fly}\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nkeys: {s: back}\n")
    with pytest.raises(ConfigError, match=r"keymap .*base\.yaml: keys\.'w' -> 'fly'"):
        Keymap.load(tmp_path / "child.yaml")
    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        Keymap.load(tmp_path / "loop.yaml")


def test_unknown_keymap_name_lists_the_available_ones() -> None:
    with pytest.raises(ConfigError, match=r"keymap 'chess' not found .*available: .*minecraft"):
        Keymap.load("chess")


def test_key_vocabulary_is_pygames() -> None:
    pygame = pytest.importorskip("pygame")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # key names need no display; pygame warns without init()
        for name in KEY_NAMES:
            code = pygame.key.key_code(name)
            assert pygame.key.name(code) == name
        constants = [getattr(pygame, k) for k in ("K_w", "K_SPACE", "K_LSHIFT", "K_LCTRL", "K_1", "K_e")]
        names = {pygame.key.name(code) for code in constants}
    assert names <= KEY_NAMES
    assert MOUSE_BUTTON_NAMES[pygame.BUTTON_LEFT] == "left" and MOUSE_BUTTON_NAMES[pygame.BUTTON_RIGHT] == "right"
    assert MOUSE_BUTTON_NAMES[pygame.BUTTON_MIDDLE] == "middle"
