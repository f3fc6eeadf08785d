"""`--backend` for the WorldMAR world (minecraft-mar): the frame's static-shape units (`mar_condition`,
`mar_step`, `mar_head` at the padded largest group) and the VAE decoder run through the backend.

- the padded head changes nothing: in float64 the backend sampler equals the eager one for any number of
  MAR iterations, and in float32 it reproduces the reference's sampled frame;
- `--backend compile` (torch.compile on CPU; the first build takes about a minute and a half here,
  inductor's on-disk cache makes later runs quicker) gives the eager frames, with no host transfer in a tick;
- a unit-replacing backend made of onnxruntime sessions of the files `build_trt.py --onnx-only` writes
  (tests/onnx_units.py) runs the world's tick, which is what a TensorRT engine per unit needs;
- a model that samples with attention dropout is refused by name, and `auto` runs it eagerly;
- on CUDA the compiled frame is one CUDA graph that never synchronises (skipped without a GPU).

The fixture WorldMAR's sampled values pass through the reference's x0 prediction at t = 999, which scales
any rounding difference of the head's noise estimate by about 2e4 (`sqrt(1/abar - 1)`) before the
clip to [-1, 1]: float32 comparisons between two ways of computing the same frame are therefore made on
the decoded uint8 frames or at the reference parity tolerance, and the exactness of the padding in float64.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import build_trt
from engine.actions.vpt import ACTION_KEYS, camera_value
from engine.backends.base import Backend
from engine.backends.compiled import CompileBackend
from engine.backends.tensorrt import read_sidecar
from engine.checkpoints.resolve import resolve_checkpoint_files
from engine.core.config import load_world_config
from engine.core.loader import load_networks, open_session
from engine.core.noise import ReplayNoise, SeededNoise
from engine.core.prompt import load_prompt_frames
from engine.core.spawn import resolve_prompt_file
from engine.errors import ConfigError
from engine.families.worldmar.mar import MARSampler, MARSettings, largest_group
from engine.families.worldmar.model import WorldMAR, load_reference_checkpoint
from engine.families.worldmar.sampler import BackendMARSampler
from engine.families.worldmar.world import WorldMARSession
from tests.conftest import record_host_transfers
from tests.onnx_units import OnnxUnitsBackend
from tests.test_worldmar_model import inputs, replayed_start_noise
from tests.tiny_mar_world import make_tiny_mar_world

CPU = torch.device("cpu")
TICKS = 4
FRAME_TOL = 2  # uint8 levels between two ways of computing the same frames
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(),
                               reason="needs a CUDA GPU (CUDA graphs and sync debug mode are CUDA-only)")


def load_model(mar_config: dict, mar_dir: Path, device: str = "cpu") -> WorldMAR:
    model = WorldMAR.from_reference_kwargs(mar_config["constructor_kwargs"])
    load_reference_checkpoint(model, mar_dir / "model_small.safetensors")
    return model.eval().to(device)


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory, fixtures_dir: Path) -> Path:
    return make_tiny_mar_world(tmp_path_factory.mktemp("tiny_mar"), fixtures_dir)


def walk_actions() -> list[torch.Tensor]:
    """Forward, then forward while turning: the memory retrieves different frames each tick."""
    actions = []
    for tick in range(TICKS):
        action = torch.zeros(len(ACTION_KEYS))
        action[ACTION_KEYS.index("forward")] = 1.0
        action[ACTION_KEYS.index("cameraY")] = float(camera_value(40 + 12 * tick))
        actions.append(action)
    return actions


def play(session) -> list[torch.Tensor]:
    return [session.step(action).frame.int() for action in walk_actions()]


@pytest.fixture(scope="module")
def eager_frames(tiny_world: Path) -> list[torch.Tensor]:
    return play(open_session(str(tiny_world), device="cpu", seed=4, allow_download=False))


@torch.no_grad()
@pytest.mark.parametrize("mar_iters", [2, 4, 7, 9])
def test_padded_head_groups_give_the_eager_sample(mar_config: dict, mar_dir: Path, mar_io, mar_iters: int) -> None:
    model = load_model(mar_config, mar_dir).double()
    args = [t.double() if t.is_floating_point() else t for t in inputs(mar_io)]
    settings = MARSettings(mar_iters=mar_iters, diffusion_steps=4)
    eager = MARSampler(model, settings, SeededNoise(3)).sample(*args)
    padded = BackendMARSampler(model, settings, SeededNoise(3), Backend(CPU, torch.float64), batch=args[0].shape[0])
    assert padded.head_rows == largest_group(model.frame_tokens, mar_iters)
    torch.testing.assert_close(padded.sample(*args), eager, atol=1e-9, rtol=0)


@torch.no_grad()
def test_padded_head_reproduces_the_reference_frame(mar_config: dict, mar_dir: Path, mar_io) -> None:
    model = load_model(mar_config, mar_dir)
    mar_iters = mar_config["io"]["mar_iters"]
    noise = ReplayNoise(replayed_start_noise(mar_io, model, mar_iters)[None])
    sampler = BackendMARSampler(model, MARSettings(mar_iters), noise, Backend(CPU, torch.float32),
                                batch=mar_io["sample_orders"].shape[0])
    torch.testing.assert_close(sampler.sample(*inputs(mar_io), orders=mar_io["sample_orders"]), mar_io["sample_out"],
                               atol=1e-3, rtol=0)


@pytest.fixture(scope="module")
def compiled_session(tiny_world: Path):
    return open_session(str(tiny_world), device="cpu", seed=4, allow_download=False, extra={"backend": "compile"})


@torch.no_grad()
def test_compiled_world_gives_the_eager_frames(compiled_session, eager_frames) -> None:
    assert compiled_session.metadata()["backend"] == "compile"
    assert compiled_session.backend.label == "compile"
    for tick, (compiled, eager) in enumerate(zip(play(compiled_session), eager_frames, strict=True)):
        assert (compiled - eager).abs().max() <= FRAME_TOL, tick
    assert set(compiled_session.timer.milliseconds()) == {"pose", "memory", "sample", "decode", "store"}


@torch.no_grad()
def test_compiled_tick_makes_no_host_transfer_calls(compiled_session, monkeypatch) -> None:
    action = walk_actions()[1]
    compiled_session.step(action)
    calls = record_host_transfers(monkeypatch)
    for _ in range(2):
        frame = compiled_session.step(action).frame
    monkeypatch.undo()
    assert calls == []
    assert frame.dtype == torch.uint8 and frame.shape == (*compiled_session.frame_size, 3)


@pytest.fixture(scope="module")
def onnx_dir(tiny_world: Path, tmp_path_factory) -> Path:
    """`build_trt.py --onnx-only` on the tiny WorldMAR world, run once for the module."""
    out = tmp_path_factory.mktemp("engines")
    assert build_trt.main(["--config", str(tiny_world), "--out", str(out), "--onnx-only", "--no-download"]) == 0
    return out / "tiny-mar"


def test_onnx_only_exports_the_tick_units_at_play_shapes(onnx_dir: Path, tiny_world: Path) -> None:
    cfg = load_world_config(tiny_world)
    net = cfg.networks.worldmar
    grid = (net.vae_seq_h // net.patch_size, net.vae_seq_w // net.patch_size)
    frames, token_dim = net.num_frames, net.vae_embed_dim * net.patch_size**2
    sidecars = {name: read_sidecar(onnx_dir / f"{name}.json")
                for name in ("mar_condition", "mar_step", "mar_head", "vae_decoder")}
    assert {name: s["role"] for name, s in sidecars.items()} == {
        "mar_condition": "worldmar", "mar_step": "worldmar", "mar_head": "worldmar", "vae_decoder": "vae"}
    assert sidecars["mar_condition"]["inputs"][1]["shape"] == [1, frames, *grid, 6]
    assert sidecars["mar_step"]["inputs"][0]["shape"] == [1, frames, *grid, token_dim]
    rows = largest_group(grid[0] * grid[1], int(cfg.sampler.mar_iters))
    assert sidecars["mar_head"]["inputs"][0]["shape"] == [rows, token_dim]
    assert sidecars["vae_decoder"]["outputs"][0]["shape"] == [1, 3, cfg.networks.vae.input_height,
                                                              cfg.networks.vae.input_width]


@torch.no_grad()
def test_onnx_units_run_the_world_tick_as_eager(onnx_dir: Path, tiny_world: Path, eager_frames) -> None:
    cfg = load_world_config(tiny_world)
    networks = load_networks(cfg, resolve_checkpoint_files(cfg, allow_download=False), CPU, torch.float32)
    backend = OnnxUnitsBackend(onnx_dir)
    session = WorldMARSession(cfg, networks["worldmar"], networks["vae"], seed=4, backend=backend)
    session.warm_up()
    height, width = session.frame_size
    session.reset(load_prompt_frames(resolve_prompt_file(cfg, None, allow_download=False), 1, height, width))
    for tick, (frame, eager) in enumerate(zip(play(session), eager_frames, strict=True)):
        assert (frame - eager).abs().max() <= FRAME_TOL, tick
    assert sorted(set(backend.units)) == ["mar_condition", "mar_head", "mar_step", "vae_decoder"]
    assert session.metadata()["backend"] == backend.label


@pytest.mark.parametrize("backend", ["compile", "eager", "auto"])
def test_attention_dropout_at_sampling_runs_only_eagerly(tiny_world: Path, backend: str, capsys) -> None:
    overrides = ["networks.worldmar.attn_dropout=0.1"]  # the tiny world keeps reference_compat: true
    if backend == "compile":
        with pytest.raises(ConfigError, match=r"--backend compile: .*networks\.worldmar\.attn_dropout=0\.1") as err:
            open_session(str(tiny_world), device="cpu", allow_download=False, overrides=overrides,
                         extra={"backend": backend})
        assert "\n" not in str(err.value)
        return
    session = open_session(str(tiny_world), device="cpu", allow_download=False, overrides=overrides,
                           extra={"backend": backend})
    assert session.metadata()["backend"] == "eager" and type(session.sampler) is MARSampler
    if backend == "auto":
        assert "backend: eager on cpu, fp32 (auto: attention dropout at sampling" in capsys.readouterr().out


@needs_gpu
@torch.no_grad()
def test_cuda_graph_frame_equals_eager_and_never_synchronises(mar_config: dict, mar_dir: Path, mar_io) -> None:
    """In float64, so that the comparison is tight (see the module docstring)."""
    model = load_model(mar_config, mar_dir, "cuda").double()
    args = [t.cuda().double() if t.is_floating_point() else t.cuda() for t in inputs(mar_io)]
    settings = MARSettings(mar_iters=mar_config["io"]["mar_iters"])
    backend = CompileBackend(torch.device("cuda"), torch.float64)
    sampler = BackendMARSampler(model, settings, SeededNoise(3, "cuda"), backend, batch=args[0].shape[0])
    backend.warm_up()
    assert backend.label == "compile+cudagraphs"
    eager = MARSampler(model, settings, SeededNoise(3, "cuda"))
    for _ in range(2):
        torch.testing.assert_close(sampler.sample(*args), eager.sample(*args), atol=1e-6, rtol=0)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):
            sampler.sample(*args)
    finally:
        torch.cuda.set_sync_debug_mode("default")
