"""World config loading: names, paths, `--set` overrides and their one-line errors."""

from __future__ import annotations

import pytest

from engine.core.config import WORLDS_DIR, load_world_config
from engine.core.networks import network_classes
from engine.errors import ConfigError
from engine.families import world_kinds, world_module


def test_overrides_apply_on_top_of_the_world_file() -> None:
    cfg = load_world_config("minecraft", ["sampler.ddim_steps=4", "fps=15"])
    assert cfg.sampler.ddim_steps == 4 and cfg.fps == 15
    assert cfg.sampler.stabilization_level == load_world_config("minecraft").sampler.stabilization_level


@pytest.mark.parametrize("entry", ["ddim_steps", "=3"])
def test_malformed_override_is_one_line(entry: str) -> None:
    with pytest.raises(ConfigError, match="expected KEY=VALUE") as err:
        load_world_config("minecraft", [entry])
    assert "\n" not in str(err.value)


def test_every_family_names_its_networks_and_opener() -> None:
    for kind in world_kinds():
        module = world_module(kind)
        assert isinstance(module.NETWORKS, dict) and callable(module.open_world)
        assert module.NETWORKS or kind == "doom-game", "only the real game has no networks"
    assert set(network_classes(load_world_config("minecraft"))) == {"dit", "vae"}


def test_errors_name_the_override_or_the_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"^--set sampler.ddim_step=4 \(world config .*minecraft.yaml\): "
                                          r"sampler.ddim_step is unknown \(did you mean sampler.ddim_steps\?\)"):
        load_world_config("minecraft", ["sampler.ddim_step=4"])
    broken = tmp_path / "broken.yaml"
    broken.write_text((WORLDS_DIR / "minecraft.yaml").read_text().replace("ddim_steps: 10", "ddim_steps: ten"))
    with pytest.raises(ConfigError, match=r"^world config .*broken.yaml: sampler.ddim_steps must be an integer, got 'ten'"):
        load_world_config(broken, ["fps=15"])
