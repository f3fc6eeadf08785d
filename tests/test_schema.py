"""Config schemas (engine.core.schema): the generic checks, safe YAML reading, the registry's schemas, and that each
family's schema says what its code does (constructor arguments and defaults, sampler defaults)."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from omegaconf import MISSING, OmegaConf

from engine.core.config import available_worlds, check_steps, load_world, load_world_config
from engine.core.schema import Invalid, integer, integers, one_of, real, validate
from engine.core.world_schema import WorldSchema
from engine.core.yaml_file import read_yaml_mapping
from engine.errors import ConfigError
from engine.families import recipe_kinds, train_schema, world_kinds, world_schema
from engine.train.schema import TrainSchema


@dataclass
class Inner:
    count: int = integer(3, 1, 10)
    rate: float = real(0.5, above=0, high=1)
    mode: str = one_of("a", "a", "b")
    sizes: list[int] = integers([1, 2], 1, 8, length=2)

    def check(self) -> None:
        if self.count % 2 == 0 and self.mode == "b":
            raise Invalid.value("count", self.count, "odd in mode b")


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    name: str = MISSING
    other: int = 0


def problem(data: dict) -> str:
    with pytest.raises(ConfigError) as exc:
        validate(OmegaConf.create(data), Outer, "cfg.yaml")
    message = str(exc.value)
    assert "\n" not in message and message.startswith("cfg.yaml")
    return message


@pytest.mark.parametrize(("data", "expected"), [
    ({"name": "x", "inner": {"count": "ten"}}, "inner.count must be an integer, got 'ten'"),
    ({"name": "x", "inner": {"count": 11}}, "inner.count must be an integer in 1..10, got 11"),
    ({"name": "x", "inner": {"count": 2.5}}, "inner.count must be an integer, got 2.5"),
    ({"name": "x", "inner": {"rate": float("nan")}}, "inner.rate must be a finite number > 0 and <= 1, got nan"),
    ({"name": "x", "inner": {"mode": "c"}}, "inner.mode must be one of a, b, got 'c'"),
    ({"name": "x", "inner": {"sizes": [1]}}, "inner.sizes must be a list of 2 integers in 1..8, got [1]"),
    ({"name": "x", "inner": {"count": 4, "mode": "b"}}, "inner.count must be odd in mode b, got 4"),
    ({"name": "x", "inner": 5}, "inner must be a mapping of count, rate, mode, sizes, got 5"),
    ({"name": "x", "innr": {"count": 2}}, "innr is unknown (did you mean inner.count?)"),
    ({"name": "x", "inner": {"cuont": 2}}, "inner.cuont is unknown (did you mean inner.count?)"),
    ({"name": "x", "zzz": 1}, "zzz is unknown (expected one of inner, name, other)"),
    ({"inner": {}}, "lacks the required key 'name'"),
    ({"name": "${missing}"}, "name: Interpolation key 'missing' not found"),
    ({"name": "x", "other": "${other}"}, "other: Recursive interpolation detected"),
])
def test_one_line_per_problem(data: dict, expected: str) -> None:
    assert expected in problem(data)


def test_a_valid_config_gives_the_typed_instance() -> None:
    typed = validate(OmegaConf.create({"name": "x", "inner": {"count": "5", "rate": 1}}), Outer, "cfg.yaml")
    assert typed == Outer(inner=Inner(count=5, rate=1.0), name="x")


def test_the_source_may_name_the_key_at_fault() -> None:
    with pytest.raises(ConfigError, match=r"^--set inner.count=0: inner.count must be"):
        validate(OmegaConf.create({"name": "x", "inner": {"count": 0}}), Outer, lambda key: f"--set {key}=0")


@pytest.mark.parametrize(("text", "expected"), [
    ("a: 1\n\tb: 2\n", "w.yaml:2: not valid YAML"),
    ("a: 1\na: 2\n", "w.yaml:2: not valid YAML (found duplicate key a)"),
    ("a: !!python/object/apply:os.system ['true']\n",
     "w.yaml:1: the tag !!python/object/apply:os.system is not allowed"),
    ("a: &x [*x]\n", "w.yaml:1: an alias refers to the value that holds it"),
    ("a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
        f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcde", "bcdef", strict=True)),
     "aliases expand to more than 100000 values"),
    ("- 1\n", "must be a mapping of keys to values, found a list"),
])
def test_yaml_that_is_not_a_plain_mapping_is_refused(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        read_yaml_mapping(path, "world config")
    assert expected in str(exc.value) and "\n" not in str(exc.value)


def test_every_kind_has_a_schema() -> None:
    for kind in world_kinds():
        assert issubclass(world_schema(kind), WorldSchema)
    for kind in recipe_kinds():
        assert issubclass(train_schema(kind), TrainSchema)


@pytest.mark.parametrize("name", available_worlds())
def test_shipped_worlds_are_valid_and_say_their_frames(name: str) -> None:
    height, width = load_world(name).settings.image_size()
    assert height > 0 and width > 0


@pytest.mark.parametrize(("world", "steps", "message"), [
    ("minecraft", 1001, r"--steps 1001 \(world 'minecraft'\): sampler.ddim_steps must be an integer in 1..1000"),
    ("atari", 0, r"sampler.num_steps_denoising must be an integer in 1..1000, got 0"),
    ("minecraft-mar", 0, r"sampler.diffusion_steps must be a number of steps in 1..1000"),
    ("doom-game", 3, r"world 'doom-game' \(doom-game\) has no denoising steps"),
])
def test_steps_are_bounded_by_the_world(world: str, steps: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_steps(load_world_config(world), steps)


def test_interpolated_values_name_the_key_they_come_from() -> None:
    with pytest.raises(ConfigError, match=r"^--set env.size=-4 .*img_size .*got -4 \(its value is \$\{env.size\}\)"):
        load_world_config("atari", ["env.size=-4"])


# -- the schemas say what the code does ------------------------------------------------------------------------


def _defaults(schema: type) -> dict:
    """Field -> default (omegaconf's MISSING where there is none)."""
    def default(f: dataclasses.Field):
        if f.default_factory is not dataclasses.MISSING:
            return f.default_factory()
        return MISSING if f.default is dataclasses.MISSING else f.default

    return {f.name: default(f) for f in dataclasses.fields(schema)}


def _signature_defaults(fn) -> dict:
    return {name: (param.default if param.default is not inspect.Parameter.empty else MISSING)
            for name, param in inspect.signature(fn).parameters.items()}


def _listed(values: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def test_network_schemas_are_the_constructors_arguments() -> None:
    from engine.families.diamond import atari, csgo
    from engine.families.diamond import schema as diamond
    from engine.families.doom import schema as doom
    from engine.families.doom.network import DoomWorldModel
    from engine.families.oasis import schema as oasis
    from engine.families.oasis.dit import OasisDiT
    from engine.families.oasis.vae import OasisVAE
    from engine.families.worldmar import schema as worldmar
    from engine.families.worldmar.model import WorldMAR

    pairs = [(OasisDiT, oasis.DiT), (OasisVAE, oasis.VAE), (WorldMAR, worldmar.WorldMARNetwork),
             (DoomWorldModel, doom.WorldModel), (atari.denoiser, diamond.AtariDenoiser),
             (atari.rew_end_model, diamond.RewEndModel), (atari.actor_critic, diamond.ActorCritic),
             (csgo.diamond_denoiser, diamond.CsgoDenoiser)]
    for constructor, schema in pairs:
        assert _defaults(schema) == _listed(_signature_defaults(constructor)), schema.__name__


def test_setting_schemas_have_the_codes_defaults() -> None:
    from engine.families.diamond import schema as diamond
    from engine.families.diamond.edm import EdmSamplerConfig
    from engine.families.diamond.loss import SigmaDistribution
    from engine.families.diamond.unet import InnerModelConfig
    from engine.families.doom import schema as doom
    from engine.families.doom.loss import ContextNoise
    from engine.families.doom.recall import Recall
    from engine.families.oasis import schema as oasis
    from engine.families.oasis.diffusion_forcing import DiffusionForcingSettings
    from engine.families.vizdoom import schema as vizdoom
    from engine.families.vizdoom.game import DoomSettings
    from engine.families.worldmar import schema as worldmar
    from engine.families.worldmar.world import MEMORY_DEFAULTS

    assert _defaults(diamond.EdmSampler) == _defaults(EdmSamplerConfig)
    assert set(_defaults(diamond.InnerModel)) == set(_defaults(InnerModelConfig)) - {"is_upsampler", "noise_cond"}
    assert _defaults(diamond.SigmaDistribution) == _defaults(SigmaDistribution)
    assert _defaults(doom.ContextNoise) == _listed(_defaults(ContextNoise))
    recall = _signature_defaults(Recall)
    assert _defaults(doom.Recall) == {k: v for k, v in recall.items() if k not in ("seed", "device")}
    sampler = _defaults(oasis.Sampler)
    assert {k: sampler[k] for k in sampler if k != "max_frames"} == {
        k: v for k, v in _defaults(DiffusionForcingSettings).items() if k != "max_frames"}
    assert _defaults(vizdoom.Game) == _listed(_defaults(DoomSettings))
    assert _defaults(worldmar.Memory) == MEMORY_DEFAULTS
