"""The hostile-input campaign as a test: every table below is bad input to one of the entry points, and each case
must end the way bad input ends here. Cases run in this process through the entry points' `main(argv)`
(launcher, engine.train, engine.checkpoints, engine.eval), and a sample of them as subprocesses, which also
catches what escapes `main` (an uncaught exception, a warning printed to stderr). Each case asserts: exit status
2, exactly one line on stderr, starting with `error: ` and naming the file or key at fault, no traceback, and
no output file left behind.

The tables cross each bad value with each key it applies to (world yaml keys of every family, `--set`, training
overrides, command-line values) and list damaged files (yaml, action files, prompts, weights, keymaps, training
checkpoints). Worlds are the tiny Oasis world of tests/tiny_world.py and the shipped yamls, which fail before
any weights load; only the weight and action cases open the tiny world.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file, save_file

from tests.conftest import PROJECT_ROOT
from tests.tiny_world import make_tiny_oasis_world

ENTRIES = {"launcher": "launcher", "train": "engine.train.__main__", "checkpoints": "engine.checkpoints.__main__",
           "eval": "engine.eval.__main__"}
COMMANDS = {"launcher": ["launcher.py"], "train": ["-m", "engine.train"], "checkpoints": ["-m", "engine.checkpoints"],
            "eval": ["-m", "engine.eval"]}
SUBPROCESS_SAMPLE = 15
PROCESSES_AT_ONCE = 3
PROCESS_ENV = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT_ROOT), "PYGAME_HIDE_SUPPORT_PROMPT": "1"}


@dataclass
class Env:
    """What the cases refer to: the tiny world, a placeholder recording, a trained run (made on first use)."""

    root: Path
    tiny: Path
    recording: Path
    make_run: Callable[[], Path]
    run: Path | None = None

    def trained_run(self) -> Path:
        if self.run is None:
            self.run = self.make_run()
        return self.run


@dataclass(frozen=True)
class Case:
    """`build(env, tmp)` writes what the case needs into `tmp` and returns (argv, names the error must contain)."""

    id: str
    entry: str
    build: Callable[[Env, Path], tuple[list[str], list[str]]] = field(compare=False)


CASES: list[Case] = []


def case(id: str, entry: str, build: Callable[[Env, Path], tuple[list[str], list[str]]]) -> None:
    CASES.append(Case(id, entry, build))


def headless(env: Env, tmp: Path, *args: str, world: str | None = None) -> list[str]:
    """A headless run of the tiny world (or a shipped one) writing into tmp/out."""
    source = ["--world", world] if world else ["--config", str(env.tiny)]
    return [*source, "--headless", "--device", "cpu", "--offline", "--frames", "3",
            "--out", str(tmp / "out" / "run.mp4"), *args]


# -- world yaml values: each bad value x each key it applies to, by --set and in the file ------------------------

BAD_INTEGERS = {"word": "ten", "negative": "-64", "zero": "0", "fraction": "64.5", "exponent": "1e12",
                "huge": str(10**30), "nan": ".nan", "list": "[1, 2]", "mapping": "{a: 1}", "null": "null",
                "bool": "true"}
BAD_NUMBERS = {"word": "fast", "negative": "-1.5", "zero": "0", "nan": ".nan", "inf": ".inf", "minus_inf": "-.inf",
               "huge": "1e30", "list": "[1.0]", "mapping": "{a: 1}", "null": "null", "bool": "false"}
BAD_CHOICES = {"unknown": "sideways", "number": "5", "list": "[bf16]", "null": "null"}

# world -> (integer keys, number keys, keys where zero is valid, keys where null is valid)
TINY = "tiny"
WORLD_KEYS: dict[str, tuple[list[str], list[str], set[str], set[str]]] = {
    TINY: (["sampler.ddim_steps", "sampler.stabilization_level", "sampler.max_noise_level", "sampler.max_frames",
            "prompt.frames", "fps", "networks.dit.hidden_size", "networks.dit.depth", "networks.dit.num_heads",
            "networks.dit.patch_size", "networks.vae.enc_dim", "networks.vae.patch_size", "networks.vae.latent_dim"],
           ["latent_scale", "sampler.noise_abs_max", "networks.dit.mlp_ratio", "networks.vae.mlp_ratio"],
           set(), {"sampler.max_frames", "fps"}),
    "atari": (["sampler.num_steps_denoising", "env.size", "env.frame_skip",
               "networks.denoiser.inner_model.cond_channels", "episode.horizon", "spawn.warmup_steps"],
              ["sampler.sigma_min", "sampler.rho", "networks.denoiser.sigma_data"],
              {"episode.horizon", "spawn.warmup_steps"}, set()),
    "csgo": (["sampler.presets.fast.next_obs.num_steps_denoising", "networks.upsampler.upsampling_factor",
              "networks.denoiser.inner_model.num_steps_conditioning"],
             ["sampler.presets.fast.upsampling.sigma_max"], set(), {"networks.upsampler.upsampling_factor"}),
    "minecraft-mar": (["sampler.mar_iters", "memory.capacity", "memory.points", "networks.worldmar.st_embed_dim",
                       "networks.worldmar.encoder_num_heads"], ["memory.point_radius"], set(), set()),
    "doom": (["sampler.num_steps_denoising", "memory.capacity", "networks.world_model.context", "frame_skip"],
             ["sampler.context_sigma", "networks.world_model.pose_scale"], set(), set()),
    "doom-game": (["game.frame_skip", "start_offset", "game.episode_timeout", "episode.horizon"], [],
                  {"start_offset", "game.episode_timeout", "episode.horizon"}, set()),
}


def world_args(world: str) -> dict:
    return {} if world == TINY else {"world": world}


def _set_case(world: str, key: str, label: str, value: str) -> None:
    yaml_name = "tiny_world.yaml" if world == TINY else f"{world}.yaml"

    def build(env: Env, tmp: Path) -> tuple[list[str], list[str]]:
        return headless(env, tmp, "--set", f"{key}={value}", **world_args(world)), [key, yaml_name, "--set"]

    case(f"set-{world}-{key}-{label}", "launcher", build)


def _file_case(key: str, label: str, value: str) -> None:
    def build(env: Env, tmp: Path) -> tuple[list[str], list[str]]:
        cfg = yaml.safe_load(env.tiny.read_text())
        cfg["checkpoints"]["files"]["dit"] = str(env.tiny.parent / "dit.safetensors")
        section = cfg
        *parents, last = key.split(".")
        for part in parents:
            section = section[part]
        section[last] = yaml.safe_load(value)
        path = tmp / f"world-{label}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return ["--config", str(path), "--headless", "--out", str(tmp / "out" / "run.mp4")], [key, path.name]

    case(f"file-{key}-{label}", "launcher", build)


for _world, (_ints, _numbers, _zero_ok, _null_ok) in WORLD_KEYS.items():
    for _key in _ints:
        for _label, _value in BAD_INTEGERS.items():
            if not (_label == "zero" and _key in _zero_ok) and not (_label == "null" and _key in _null_ok):
                _set_case(_world, _key, _label, _value)
    for _key in _numbers:
        for _label, _value in BAD_NUMBERS.items():
            _set_case(_world, _key, _label, _value)

for _key in WORLD_KEYS[TINY][0]:
    for _label in ("word", "negative", "fraction", "nan", "list", "mapping"):
        _file_case(_key, _label, BAD_INTEGERS[_label])
for _key in WORLD_KEYS[TINY][1]:
    for _label in ("word", "negative", "nan", "inf"):
        _file_case(_key, _label, BAD_NUMBERS[_label])

for _key, _value in (("player.filter", "blur"), ("player.window_size", "[0, 5]"), ("player.window_size", "[640]"),
                     ("sampler", "5"), ("networks.dit", "[1, 2]"), ("checkpoints.files", "x.safetensors"),
                     ("checkpoints.files.extra", "x.safetensors"), ("checkpoints.prefixes.extra", "e."),
                     ("actions", "minecraft"), ("fps", "${nope}"), ("fps", "${fps}"), ("fps", "${oc.env:NO_SUCH_VAR}")):
    _set_case(TINY, _key, f"shape-{_value}", _value)
_set_case("csgo", "frame_size", "one", "[150]")
_set_case("atari", "game", "unknown", "NoSuchGame")
_set_case("atari", "spawn.policy", "unknown", "psychic")
_set_case("minecraft-mar", "memory.retrieval_backend", "unknown", "cuda")
_set_case("minecraft-mar", "sampler.diffusion_steps", "zero", "0")
_set_case("minecraft-mar", "memory.keep_recent", "too-many", "5000")
_set_case("doom-game", "game.monsters", "word", "many")
_set_case("doom-game", "game.frame_size", "short", "[64]")

# -- unknown keys get the nearest valid key ------------------------------------------------------------------

for _world, _key, _nearest in (
        (TINY, "sampler.ddim_step", "sampler.ddim_steps"), (TINY, "sampler.ddimsteps", "sampler.ddim_steps"),
        (TINY, "networks.dit.hiden_size", "networks.dit.hidden_size"),
        (TINY, "networks.dti.depth", "networks.dit.depth"), (TINY, "latent_scal", "latent_scale"),
        (TINY, "promt.frames", "prompt.frames"), (TINY, "player.filtr", "player.filter"),
        (TINY, "actions.keymapp", "actions.keymap"), (TINY, "checkpoints.filez.dit", "checkpoints.files"),
        ("atari", "spawn.polcy", "spawn.policy"), ("atari", "env.sizee", "env.size"),
        ("atari", "sampler.num_step_denoising", "sampler.num_steps_denoising"), ("doom-game", "game.wadd", "game.wad"),
        ("doom-game", "game.frameskip", "game.frame_skip"), ("doom", "memory.capcity", "memory.capacity"),
        ("minecraft-mar", "memory.capcity", "memory.capacity"), ("csgo", "sampler.preset_", "sampler.preset")):
    def _unknown(env: Env, tmp: Path, world: str = _world, key: str = _key, nearest: str = _nearest):
        return headless(env, tmp, "--set", f"{key}=5", **world_args(world)), [key, f"did you mean {nearest}?"]

    case(f"unknown-{_world}-{_key}", "launcher", _unknown)

# -- training configs: overrides, values, unknown keys ---------------------------------------------------------

TRAIN_INTEGERS = (["train.steps", "train.batch_size", "train.checkpoint_every", "train.num_workers", "train.keep_last",
                   "seed", "optim.warmup_steps", "data.num_frames", "loss.timesteps", "model.dit.hidden_size"],
                  {"train.num_workers", "train.keep_last", "seed", "optim.warmup_steps"})
TRAIN_NUMBERS = (["optim.lr", "optim.eps", "optim.weight_decay", "train.ema_decay", "optim.grad_clip",
                  "optim.min_lr_ratio", "loss.snr_clip"], {"optim.weight_decay", "train.ema_decay", "optim.grad_clip",
                                                           "optim.min_lr_ratio"})


def _train_case(key: str, label: str, value: str, names: list[str] | None = None) -> None:
    def build(env: Env, tmp: Path) -> tuple[list[str], list[str]]:
        argv = ["--config", "oasis_tiny", f"output_dir={tmp / 'out'}", f"{key}={value}"]
        return argv, names or [key, "oasis_tiny.yaml"]

    case(f"train-{key}-{label}", "train", build)


for _key in TRAIN_INTEGERS[0]:
    for _label in ("word", "negative", "zero", "fraction", "huge", "nan", "list", "null", "bool"):
        if not (_label == "zero" and _key in TRAIN_INTEGERS[1]):
            _train_case(_key, _label, BAD_INTEGERS[_label])
for _key in TRAIN_NUMBERS[0]:
    for _label in ("word", "negative", "nan", "inf", "huge", "list", "null"):
        _train_case(_key, _label, BAD_NUMBERS[_label])
for _key in ("train.device", "train.precision", "distributed.strategy", "data.cache"):
    for _label, _value in BAD_CHOICES.items():
        if not (_key == "data.cache" and _label in ("unknown", "null", "number")):
            _train_case(_key, _label, _value)
for _key, _value in (("optim.betas", "[0.9]"), ("optim.betas", "[0.9, 1.5]"), ("data.paths", "5"),
                     ("model.vae", "7"), ("train", "5")):
    _train_case(_key, f"shape-{_value}", _value)
for _key, _nearest in (("trian.stepz", "train.steps"), ("train.stepz", "train.steps"), ("optim.lrr", "optim.lr"),
                       ("init.dti", "init.dit"), ("data.pathz", "data.paths"), ("model.dit.hiden_size",
                                                                            "model.dit.hidden_size"),
                       ("distribute.strategy", "distributed.strategy"), ("loss.snr_clipp", "loss.snr_clip")):
    _train_case(_key, "unknown", "5", [_key, f"did you mean {_nearest}?"])
_train_case("+init.dit", "hydra-prefix", "x.safetensors", ["+init.dit", "write init.dit=x.safetensors"])
_train_case("train.steps", "no-value", "", ["train.steps", "oasis_tiny.yaml"])

# -- broken yaml files: world configs (launcher, verify, eval) and training configs ---------------------------


def _bomb(levels: int = 7) -> str:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{k}: &a{k} [{', '.join([f'*a{k - 1}'] * 10)}]" for k in range(1, levels)]
    return "\n".join(lines) + "\n"


YAML_DAMAGE: dict[str, Callable[[str], str | bytes]] = {
    "tab": lambda text: text.replace("\n  ", "\n\t", 1),
    "duplicate-key": lambda text: text + next(line for line in text.splitlines() if line[:1].isalpha()) + "\n",
    "python-tag": lambda text: text + "evil: !!python/object/apply:os.system ['echo pwned']\n",
    "custom-tag": lambda text: text + "evil: !secret value\n",
    "alias-bomb": lambda text: text + _bomb(),
    "recursive-alias": lambda text: text + "loop: &loop [*loop]\n",
    "undefined-alias": lambda text: text + "ghost: *nowhere\n",
    "unclosed-bracket": lambda text: text + "broken: [1, 2\nnext: 3\n",
    "binary": lambda text: b"\xff\xfe\x00\x81garbage\x00" * 10,
    "oversize": lambda text: text + "#" * (2 << 20) + "\n",
    "list-root": lambda text: "- 1\n- 2\n",
    "scalar-root": lambda text: "just a sentence\n",
    "empty": lambda text: "",
    "deep-nesting": lambda text: "deep: " + "[" * 3000 + "]" * 3000 + "\n",
    "unknown-family": lambda text: text.replace("family: ", "family: x", 1),
    "missing-interpolation": lambda text: text + "name: ${no.such.key}\n" if "\nname:" not in text
    else text.replace("\nname: ", "\nname: ${no.such.key}", 1),
    "bad-interpolation": lambda text: text.replace("\nfamily: ", "\nbroken: ${oops\nfamily: ", 1),
}


TRAIN_YAML = PROJECT_ROOT / "engine" / "train" / "configs" / "oasis_tiny.yaml"

for _label, _damage in YAML_DAMAGE.items():
    def _world_yaml(env: Env, tmp: Path, damage=_damage, label=_label) -> Path:
        path = tmp / f"broken-{label}.yaml"
        text = damage(env.tiny.read_text())
        path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
        return path

    def _launcher(env: Env, tmp: Path, world=_world_yaml):
        path = world(env, tmp)
        return ["--config", str(path), "--headless", "--out", str(tmp / "out" / "run.mp4")], [path.name]

    def _verify(env: Env, tmp: Path, world=_world_yaml):
        path = world(env, tmp)
        return ["verify", str(path)], [path.name]

    def _eval(env: Env, tmp: Path, world=_world_yaml):
        path = world(env, tmp)
        return ["--world", str(path), "--data", str(env.recording), "--out", str(tmp / "out")], [path.name]

    def _train(env: Env, tmp: Path, damage=_damage, label=_label):
        path = tmp / f"broken-{label}.yaml"
        text = damage(TRAIN_YAML.read_text())
        path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
        return ["--config", str(path), f"output_dir={tmp / 'out'}"], [path.name]

    case(f"yaml-world-{_label}", "launcher", _launcher)
    case(f"yaml-verify-{_label}", "checkpoints", _verify)
    case(f"yaml-eval-{_label}", "eval", _eval)
    case(f"yaml-train-{_label}", "train", _train)

# -- command-line values -------------------------------------------------------------------------------------

for _flag, _values in (("--steps", ["0", "-1", "ten", "1.5", "5000"]), ("--seed", [str(2**70), "-1", "x", "1e3"]),
                       ("--device", ["tpu", "cuda:x", "mps", ""]), ("--frames", ["0", "-5", str(10**9), "x"]),
                       ("--fps", ["-1", "nan", "inf", "-inf", "x", "1e9"]),
                       ("--mouse-sensitivity", ["nan", "-1", "inf", "x"]),
                       ("--record-max-mb", ["-1", "x", str(10**12)]),
                       ("--window-size", ["0x5", "axb", "5", "99999x99999"]), ("--action-offset", ["-1", "x"]),
                       ("--dtype", ["fp8"]), ("--sampler", ["fastest"]), ("--backend", ["gpu"])):
    for _value in _values:
        def _cli(env: Env, tmp: Path, flag=_flag, value=_value):
            return headless(env, tmp, flag, value), [flag]

        case(f"cli-launcher{_flag}={_value}", "launcher", _cli)

for _flag, _value in (("--steps", "0"), ("--steps", "-3"), ("--seed", str(2**70)), ("--device", "tpu")):
    def _eval_cli(env: Env, tmp: Path, flag=_flag, value=_value):  # the Doom dream: the world engine.eval scores
        return ["--world", "doom", "--data", str(env.recording), "--out", str(tmp / "out"), flag, value], [flag]

    case(f"cli-eval{_flag}={_value}", "eval", _eval_cli)

case("cli-train-no-config", "train", lambda env, tmp: ([], ["--config"]))
case("cli-verify-no-world", "checkpoints", lambda env, tmp: (["verify"], ["world"]))
case("cli-verify-bad-game", "checkpoints", lambda env, tmp: (["verify", "atari", "--game", "NoSuchGame"], ["game"]))
case("cli-verify-game-unknown-key", "checkpoints",
     lambda env, tmp: (["verify", str(env.tiny), "--game", "Pong"], ["game", "is unknown"]))
case("cli-verify-bad-set", "checkpoints",
     lambda env, tmp: (["verify", str(env.tiny), "--set", "sampler.ddim_steps=-2"], ["sampler.ddim_steps"]))
case("cli-weights-no-path", "launcher", lambda env, tmp: (headless(env, tmp, "--weights", "dit"), ["--weights"]))

# -- action files ----------------------------------------------------------------------------------------------


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _saved(path: Path, obj: object) -> Path:
    torch.save(obj, path)
    return path


def _truncated(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _one_hot(path: Path, rows: torch.Tensor) -> Path:
    save_file({"one_hot": rows}, str(path))
    return path


def _npy_named_npz(tmp: Path) -> Path:
    np.save(tmp / "a.npy", np.zeros((8, 25)))
    return (tmp / "a.npy").rename(tmp / "a.npz")


def _jsonl(path: Path, **changes) -> Path:
    return _text(path, json.dumps(VPT_IDLE | changes) + "\n")


def namespace() -> object:
    """An object safe loading (weights_only) refuses."""
    return argparse.Namespace(x=1)


VPT_IDLE = {key: 0 for key in ("ESC", "attack", "back", "drop", "forward", "inventory", "jump", "left", "pickItem",
                               "right", "sneak", "sprint", "swapHands", "use", *(f"hotbar.{i}" for i in range(1, 10)))}
VPT_IDLE["camera"] = [40, 40]
ROWS = (8, 25)
ACTION_FILES: dict[str, Callable[[Path], Path]] = {
    "npz-truncated": lambda tmp: _truncated(_npz(tmp / "a.npz", actions=np.zeros((40, 25), np.float32))),
    "npz-garbage": lambda tmp: _bytes(tmp / "a.npz", b"PK\x03\x04 not a zip at all"),
    "npz-strings": lambda tmp: _npz(tmp / "a.npz", actions=np.full(ROWS, "left")),
    "npz-objects": lambda tmp: _npz(tmp / "a.npz", actions=np.array([{"a": 1}] * 8, dtype=object)),
    "npz-no-actions": lambda tmp: _npz(tmp / "a.npz", frames=np.zeros((2, 4, 4, 3), np.uint8)),
    "npz-nan": lambda tmp: _npz(tmp / "a.npz", actions=np.full(ROWS, np.nan, np.float32)),
    "npz-huge": lambda tmp: _npz(tmp / "a.npz", actions=np.full(ROWS, 1e30, np.float32)),
    "npz-1d": lambda tmp: _npz(tmp / "a.npz", actions=np.zeros(8, np.float32)),
    "npz-is-npy": _npy_named_npz,
    "jsonl-bad-json": lambda tmp: _text(tmp / "a.jsonl", '{"forward": 1,\n'),
    "jsonl-nan-camera": lambda tmp: _jsonl(tmp / "a.jsonl", camera=[float("nan"), 40]),
    "jsonl-huge-key": lambda tmp: _jsonl(tmp / "a.jsonl", jump=1e30),
    "jsonl-missing-key": lambda tmp: _text(tmp / "a.jsonl", '{"forward": 1}\n'),
    "jsonl-binary": lambda tmp: _bytes(tmp / "a.jsonl", b"\xff\xfe\x00\x81"),
    "safetensors-garbage": lambda tmp: _bytes(tmp / "a.safetensors", b"\x10\x00\x00\x00garbage"),
    "safetensors-inf": lambda tmp: _one_hot(tmp / "a.safetensors", torch.full(ROWS, float("inf"))),
    "pt-unsafe": lambda tmp: _saved(tmp / "a.pt", {"rows": namespace()}),
    "csv": lambda tmp: _text(tmp / "a.csv", "1,2\n"),
    "missing": lambda tmp: tmp / "absent.jsonl",
}

for _label, _make in ACTION_FILES.items():
    def _actions(env: Env, tmp: Path, make=_make):
        path = make(tmp)
        return headless(env, tmp, "--actions", str(path)), [path.name]

    case(f"actions-{_label}", "launcher", _actions)

# -- prompt images ---------------------------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(path: Path, side: int = 200_000) -> Path:
    """A few hundred bytes that claim a side x side RGB image."""
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 1024)
    return _bytes(path, b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", pixels)
                  + _png_chunk(b"IEND", b""))


def _image(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


NOISE = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
PROMPTS: dict[str, Callable[[Path], Path]] = {
    "bomb-png": lambda tmp: bomb_png(tmp / "p.png"),
    "large-png": lambda tmp: bomb_png(tmp / "p.png", side=9000),
    "truncated-png": lambda tmp: _truncated(_image(tmp / "p.png", NOISE), 0.3),
    "text-png": lambda tmp: _text(tmp / "p.png", "not an image"),
    "empty-png": lambda tmp: _bytes(tmp / "p.png", b""),
    "float-tiff-above-one": lambda tmp: _image(tmp / "p.tiff", np.full((8, 8), 7.5, np.float32)),
    "float-tiff-nan": lambda tmp: _image(tmp / "p.tiff", np.full((8, 8), np.nan, np.float32)),
    "int-tiff-out-of-range": lambda tmp: _image(tmp / "p.tiff", np.full((8, 8), 2**20, np.int32)),
    "garbage-jpg": lambda tmp: _bytes(tmp / "p.jpg", b"\xff\xd8\xff" + b"\x00" * 50),
    "missing": lambda tmp: tmp / "absent.png",
    "folder": lambda tmp: _folder(tmp / "p.png"),
}

for _label, _make in PROMPTS.items():
    def _prompt(env: Env, tmp: Path, make=_make):
        path = make(tmp)
        return headless(env, tmp, "--prompt", str(path)), [path.name]

    case(f"prompt-{_label}", "launcher", _prompt)

# -- weights: through the launcher (a one-line error before any frame) and verify (unreadable files) ------------


def _tiny_weights(env: Env) -> dict[str, torch.Tensor]:
    return load_file(env.tiny.parent / "dit.safetensors")


def _weights(tmp: Path, state: dict[str, torch.Tensor]) -> Path:
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "dit.safetensors"))
    return tmp / "dit.safetensors"


def _one_changed(env: Env, tmp: Path, change: Callable[[torch.Tensor], torch.Tensor]) -> Path:
    state = _tiny_weights(env)
    key = next(k for k, v in state.items() if v.is_floating_point() and v.dim() == 2)
    return _weights(tmp, state | {key: change(state[key])})


class CallsSystem:
    """A pickle that would run a shell command when loaded unsafely."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


WEIGHTS: dict[str, Callable[[Env, Path], Path]] = {
    "nan": lambda env, tmp: _one_changed(env, tmp, lambda t: torch.full_like(t, float("nan"))),
    "inf": lambda env, tmp: _one_changed(env, tmp, lambda t: torch.full_like(t, float("-inf"))),
    "huge": lambda env, tmp: _one_changed(env, tmp, lambda t: torch.full_like(t, 1e30)),
    "int32": lambda env, tmp: _one_changed(env, tmp, lambda t: t.to(torch.int32)),
    "bool": lambda env, tmp: _one_changed(env, tmp, lambda t: t.to(torch.bool)),
    "wrong-shape": lambda env, tmp: _one_changed(env, tmp, lambda t: t[:1]),
    "missing-key": lambda env, tmp: _weights(tmp, dict(list(_tiny_weights(env).items())[1:])),
    "extra-key": lambda env, tmp: _weights(tmp, _tiny_weights(env) | {"stowaway": torch.zeros(3)}),
    "truncated": lambda env, tmp: _truncated(_weights(tmp, _tiny_weights(env)), 0.6),
    "header-only": lambda env, tmp: _truncated(_weights(tmp, _tiny_weights(env)), 0.01),
    "garbage": lambda env, tmp: _bytes(tmp / "dit.safetensors", os.urandom(4096)),
    "empty": lambda env, tmp: _bytes(tmp / "dit.safetensors", b""),
    "pickle-reduce": lambda env, tmp: _saved(tmp / "dit.pt", {"w": CallsSystem()}),
    "pickle-namespace": lambda env, tmp: _saved(tmp / "dit.pt", {"w": namespace()}),
    "pickle-truncated": lambda env, tmp: _truncated(_saved(tmp / "dit.pt", _tiny_weights(env))),
    "pickle-list": lambda env, tmp: _saved(tmp / "dit.pt", [torch.zeros(2)]),
    "unknown-suffix": lambda env, tmp: _bytes(tmp / "dit.onnx", b"\x00"),
    "missing": lambda env, tmp: tmp / "absent.safetensors",
}
UNREADABLE = ("truncated", "header-only", "garbage", "empty", "pickle-reduce", "pickle-namespace", "pickle-truncated",
              "pickle-list", "unknown-suffix", "missing")

for _label, _make in WEIGHTS.items():
    def _launch(env: Env, tmp: Path, make=_make):
        path = make(env, tmp)
        return headless(env, tmp, "--weights", f"dit={path}"), [path.name]

    case(f"weights-launcher-{_label}", "launcher", _launch)
    if _label in UNREADABLE:
        def _check(env: Env, tmp: Path, make=_make):
            path = make(env, tmp)
            return ["verify", str(env.tiny), f"dit={path}"], [path.name]

        case(f"weights-verify-{_label}", "checkpoints", _check)

# -- keymaps (the window is never opened: a keymap is read first) ----------------------------------------------

KEYMAPS: dict[str, str | bytes] = {
    "syntax": "keys: {w: forward\n",
    "python-tag": "keys: !!python/object/apply:os.system ['echo pwned']\n",
    "unknown-section": "buttons: {w: forward}\n",
    "bad-key-name": "keys: {wasd: forward}\n",
    "bad-target": "keys: {w: fly}\n",
    "camera-nan": "camera: {sensitivity: .nan}\n",
    "camera-inf": "camera: {sensitivity: .inf}\n",
    "camera-text": "camera: {sensitivity: fast}\n",
    "list-root": "- w\n- a\n",
    "binary": b"\xff\xfe\x00\x81",
    "extends-missing": "extends: no_such_keymap\n",
    "extends-loop": "extends: km.yaml\n",
}

for _label, _keymap_text in KEYMAPS.items():
    def _keymap(env: Env, tmp: Path, text=_keymap_text):
        path = tmp / "km.yaml"
        path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
        return ["--config", str(env.tiny), "--keymap", str(path), "--recordings", str(tmp / "out")], ["km.yaml"]

    case(f"keymap-{_label}", "launcher", _keymap)

# -- damaged training checkpoints (resuming a one-step run of oasis_tiny) ---------------------------------------


def _latest(run: Path) -> Path:
    checkpoints = run / "checkpoints"
    return checkpoints / (checkpoints / "latest").read_text().strip()


def _drop_key(path: Path) -> None:
    """Drop a trained weight (not one of the names a shared tensor is stored under once)."""
    state = load_file(path)
    dropped = max(key for key in state if key.endswith("mlp.fc1.weight") or key.endswith("fc1.weight"))
    save_file({k: v for k, v in state.items() if k != dropped}, str(path))


def _nan_weights(path: Path) -> None:
    state = load_file(path)
    key = next(k for k, v in state.items() if v.is_floating_point())
    save_file(state | {key: torch.full_like(state[key], float("nan"))}, str(path))


CHECKPOINT_DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "pointer-traversal": (lambda run: (run / "checkpoints" / "latest").write_text("../../../etc"), "latest"),
    "pointer-binary": (lambda run: (run / "checkpoints" / "latest").write_bytes(b"\xff\xfe\x00"), "latest"),
    "pointer-missing-step": (lambda run: (run / "checkpoints" / "latest").write_text("step_999999"), "latest"),
    "state-truncated": (lambda run: _truncated(_latest(run) / "train_state.pt"), "train_state.pt"),
    "state-empty": (lambda run: (_latest(run) / "train_state.pt").write_bytes(b""), "train_state.pt"),
    "state-garbage": (lambda run: (_latest(run) / "train_state.pt").write_bytes(os.urandom(512)), "train_state.pt"),
    "state-foreign": (lambda run: torch.save({"step": "seven"}, _latest(run) / "train_state.pt"), "train_state.pt"),
    "model-truncated": (lambda run: _truncated(_latest(run) / "model.safetensors"), "model.safetensors"),
    "model-missing": (lambda run: (_latest(run) / "model.safetensors").unlink(), "model.safetensors"),
    "model-nan": (lambda run: _nan_weights(_latest(run) / "model.safetensors"), "model.safetensors"),
    "model-missing-key": (lambda run: _drop_key(_latest(run) / "model.safetensors"), "model.safetensors"),
    "ema-missing": (lambda run: (_latest(run) / "ema.safetensors").unlink(), "ema.safetensors"),
    "ema-missing-key": (lambda run: _drop_key(_latest(run) / "ema.safetensors"), "ema.safetensors"),
    "metrics-bad-json": (lambda run: (run / "metrics.jsonl").write_text('{"step": 1, "loss": \n'), "metrics.jsonl"),
    "metrics-no-step": (lambda run: (run / "metrics.jsonl").write_text('{"loss": 1.0}\n'), "metrics.jsonl"),
}

for _label, (_damage, _name) in CHECKPOINT_DAMAGE.items():
    def _resume(env: Env, tmp: Path, damage=_damage, name=_name):
        run = tmp / "run"
        shutil.copytree(env.trained_run(), run)
        damage(run)
        overrides = json.loads((env.trained_run() / "overrides.json").read_text())
        return ["--config", "oasis_tiny", *overrides, f"output_dir={run}", "train.steps=2"], [name]

    case(f"checkpoint-{_label}", "train", _resume)

# -- running the cases -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def env(tmp_path_factory, oasis_dir: Path) -> Env:
    root = tmp_path_factory.mktemp("fuzz")
    tiny = make_tiny_oasis_world(root / "tiny", oasis_dir, max_frames=4, ddim_steps=2)
    recording = root / "recording.npz"
    recording.write_bytes(b"")  # engine.eval checks only that it exists before opening the world

    def make_run() -> Path:
        from engine.train.config import load_train_config
        from engine.train.trainer import train
        from tests.train_support import oasis_overrides, panorama_data

        data = panorama_data(root / "data", oasis_dir, episodes=1, frames=12)
        run = root / "trained"
        overrides = [entry for entry in oasis_overrides(data, run, oasis_dir, steps=1, every=1)
                     if not entry.startswith("output_dir=")] + ["train.batch_size=2"]
        train(load_train_config("oasis_tiny", [*overrides, f"output_dir={run}"]))
        (run / "overrides.json").write_text(json.dumps(overrides))
        return run

    return Env(root, tiny, recording, make_run)


def leftovers(folder: Path) -> list[str]:
    """Output files a failed run must not leave: recordings, spools, partial checkpoints or downloads."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.suffix in (".mp4", ".npz", ".spool", ".partial", ".tmp", ".part") or p.name.endswith(".partial"))


def assert_one_line_error(code: object, out: str, err: str, names: list[str], tmp: Path) -> None:
    lines = err.splitlines()
    assert code == 2, f"exit status {code}, stderr: {err[-2000:]}"
    assert "Traceback" not in err and "Traceback" not in out, err[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), f"expected one 'error: ' line, got: {err[-2000:]!r}"
    for name in names:
        assert name in lines[0], f"{name!r} not named in {lines[0]!r}"
    assert not leftovers(tmp / "out"), leftovers(tmp / "out")


def run_in_process(entry: str, argv: list[str], capsys) -> tuple[object, str, str]:
    main = importlib.import_module(ENTRIES[entry]).main
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_the_tables_are_large(capsys):
    assert len(CASES) >= 300 and len({c.id for c in CASES}) == len(CASES)
    assert len(subprocess_sample()) == SUBPROCESS_SAMPLE
    with capsys.disabled():
        print(f"\n{len(CASES)} fuzz cases in-process, {SUBPROCESS_SAMPLE} of them also as subprocesses")


@pytest.mark.parametrize("fuzz_case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line(fuzz_case: Case, env: Env, tmp_path: Path, capsys):
    argv, names = fuzz_case.build(env, tmp_path)
    code, out, err = run_in_process(fuzz_case.entry, argv, capsys)
    assert_one_line_error(code, out, err, names, tmp_path)


SUBPROCESS_IDS = ("set-tiny-sampler.ddim_steps-word", "file-networks.dit.hidden_size-nan",
                  "unknown-tiny-sampler.ddim_step", "train-train.steps-negative", "yaml-world-python-tag",
                  "yaml-verify-alias-bomb",
                  "yaml-train-duplicate-key", "cli-launcher--seed=1180591620717411303424", "cli-launcher--fps=nan",
                  "actions-npz-truncated", "prompt-bomb-png", "weights-launcher-nan", "weights-verify-truncated",
                  "keymap-camera-inf", "checkpoint-state-truncated")


def subprocess_sample() -> list[Case]:
    """A case of each kind of input, run as its own process."""
    by_id = {c.id: c for c in CASES}
    return [by_id[name] for name in SUBPROCESS_IDS]


@pytest.fixture(scope="module")
def processes(env: Env, tmp_path_factory, request) -> dict[str, tuple[Future, list[str], Path]]:
    """The selected cases of the subprocess sample, started together (a few at a time): case id -> (its run,
    the names its error must contain, its folder)."""
    selected = {item.callspec.id for item in request.session.items
                if item.originalname == "test_bad_input_is_one_line_as_a_process"}
    pool = ThreadPoolExecutor(max_workers=PROCESSES_AT_ONCE)
    started = {}
    for fuzz_case in (c for c in subprocess_sample() if c.id in selected):
        tmp = tmp_path_factory.mktemp("process")
        argv, names = fuzz_case.build(env, tmp)
        command = [sys.executable, *COMMANDS[fuzz_case.entry], *argv]
        started[fuzz_case.id] = (pool.submit(subprocess.run, command, cwd=PROJECT_ROOT, capture_output=True, text=True,
                                             timeout=180, env=PROCESS_ENV), names, tmp)
    yield started
    pool.shutdown(wait=True)


@pytest.mark.parametrize("fuzz_case", subprocess_sample(), ids=[c.id for c in subprocess_sample()])
def test_bad_input_is_one_line_as_a_process(fuzz_case: Case, processes):
    future, names, tmp = processes[fuzz_case.id]
    done = future.result()
    assert_one_line_error(done.returncode, done.stdout, done.stderr, names, tmp)
