"""CS:GO action encoding against the reference examples of csgo_actions.json (exact)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from engine.actions.csgo import NUM_ACTIONS, CSGOAction, encode_csgo_action


def test_csgo_action_examples(fixtures_dir: Path) -> None:
    examples = json.loads((fixtures_dir / "diamond" / "csgo_actions.json").read_text())["examples"]
    assert examples
    for example in examples:
        given, processed = example["input"], example["after_processing"]
        action = CSGOAction.from_input(given["keys"], given["mouse_x"], given["mouse_y"], given["l_click"],
                                       given["r_click"])
        assert list(action.keys) == processed["keys"], given
        assert (action.mouse_x, action.mouse_y) == (processed["mouse_x"], processed["mouse_y"]), given
        vector = encode_csgo_action(given["keys"], given["mouse_x"], given["mouse_y"], given["l_click"],
                                    given["r_click"])
        assert vector.shape == (NUM_ACTIONS,) and vector.dtype == torch.float32
        assert vector.tolist() == [float(v) for v in example["vector"]], given
        assert vector.nonzero().flatten().tolist() == example["active_indices"]


def test_unknown_keys_are_dropped() -> None:
    assert CSGOAction.from_input(["q", "w", "w"], 0, 0, False, False).keys == ("w",)
