"""The real Doom as a world: the session contract, the collector's recordings and the dataset that reads them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.actions import doom as actions
from engine.core.loader import open_session
from engine.core.runner import Runner
from engine.families.doom.data import DoomItems
from engine.families.doom.recall import Recall
from engine.recordings import read_recording
from engine.train.data import find_episodes
from tests.doom_support import collect_recordings


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    out = tmp_path_factory.mktemp("doom")
    return collect_recordings(out, episodes=2, ticks=60), collect_recordings(out, 1, 40, split="heldout")


def test_the_game_plays_through_the_runner_with_the_engine_pose():
    session = open_session("doom-game", device="cpu")
    try:
        runner = Runner(session)
        first = runner.prompt()
        forward = torch.from_numpy(actions.encode(["forward"]))
        ticks = [runner.step(forward) for _ in range(12)]
        game = session.game.game
        import vizdoom

        x, y, z = (game.get_game_variable(getattr(vizdoom.GameVariable, f"POSITION_{a}")) for a in "XYZ")
        np.testing.assert_allclose(ticks[-1].pose[[0, 1, 2]], [x, z, y], atol=1e-3)
        assert ticks[-1].frame.shape == (64, 80, 3) and ticks[-1].frame.dtype == np.uint8
        assert np.abs(ticks[-1].frame.astype(int) - first.frame.astype(int)).mean() > 1, "walking changes the view"
        assert np.linalg.norm(ticks[-1].pose[[0, 2]] - ticks[0].pose[[0, 2]]) > 50
        runner.reset()
        replayed = [runner.step(forward) for _ in range(12)]
        for a, b in zip(ticks, replayed, strict=True):
            np.testing.assert_array_equal(a.pose, b.pose)
            # the same walk; ViZDoom's light flicker can differ in a few percent of the pixels (measured)
            assert np.abs(a.frame.astype(int) - b.frame.astype(int)).mean() < 1.0
    finally:
        session.close()


def test_bad_actions_are_one_line_errors():
    session = open_session("doom-game", device="cpu")
    try:
        from engine.errors import ConfigError

        with pytest.raises(ConfigError, match="finite"):
            session.step(torch.tensor([0, 0, 0, 0, 0, 0, float("nan")]))
        with pytest.raises(ConfigError, match="7 values"):
            session.step(torch.zeros(3))
    finally:
        session.close()


def test_collect_writes_recordings_with_poses_and_disjoint_splits(recordings):
    train, heldout = recordings
    files = sorted(train.glob("*.npz"))
    assert len(files) == 2 and len(list(heldout.glob("*.npz"))) == 1
    seeds = set()
    for path in [*files, *heldout.glob("*.npz")]:
        data = read_recording(path)
        meta = data["metadata"]
        assert path.with_suffix(".mp4").is_file()
        assert data["frames"].shape[1:] == (64, 80, 3) and data["actions"].shape[1] == actions.NUM_ACTIONS
        assert np.isfinite(data["poses"]).all() and not data["actions"][0].any()
        assert meta["world"] == "doom-game" and meta["map"] == "E1M1" and meta["policy"] == "explore"
        assert data["depth"].shape == data["frames"].shape[:3] and data["depth"].dtype == np.uint8
        assert meta["extra_keys"] == ["depth"] and meta["depth_units"] > 0
        seeds.add((meta["split"], meta["seed"]))
        steps = np.linalg.norm(np.diff(data["poses"][:, [0, 2]], axis=0), axis=1)
        assert steps.max() < 40, "frame t is what action t led to: no jumps"
    assert len(seeds) == 3 and {s for split, s in seeds if split == "heldout"} >= {1_000_000}


def test_recordings_feed_the_training_dataset(recordings):
    train, _ = recordings
    episodes = find_episodes([str(train)])
    items = DoomItems(episodes, context=4, memory=2, recall=Recall(), pose_scale=256.0, memory_dropout=0.0)
    item = items[len(items) - 1]
    assert item["context"].shape == (12, 64, 80) and item["target"].shape == (3, 64, 80)
    assert item["actions"].shape == (4, 7) and item["memory_pose"].shape == (2, 6)
    assert item["target"].min() >= -1 and item["target"].max() <= 1
    episode, t = items.locate(len(items) - 1)
    recalled = items.memory_indices(episode, t)
    assert len(recalled) >= 1 and (recalled <= t - items.recall.min_age).all(), "memory frames are min_age old"
    assert json.dumps({"ok": True})
