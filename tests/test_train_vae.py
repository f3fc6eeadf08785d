"""The training quick-start without the reference fixtures: panorama data -> the tiny VAE (`oasis_vae_tiny`,
`worldmar_vae_tiny`) -> the tiny Oasis and WorldMAR worlds on it (`oasis_tiny`, `worldmar_tiny`, as shipped),
whose frames resemble held-out data far more than noise does; what the VAE recipe writes; and no training
config reads the fixtures."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf
from safetensors.torch import load_file

from engine.core.loader import open_session
from engine.errors import ConfigError
from engine.families.oasis.vae import OasisVAE
from engine.families.oasis.vae_recipe import reconstruct, scale_latents, to_uint8
from engine.train.config import CONFIGS_DIR, load_train_config
from engine.train.data import EpisodeFrames, find_episodes, to_model_frames
from engine.train.data.sampling import OASIS_LATENT_SCALE
from engine.train.panorama import write_panorama_dataset
from engine.train.recipes import build_recipe
from engine.train.trainer import train

VAE_STEPS = 300  # oasis_vae_tiny trains 600, oasis_tiny 300: fewer here, still far above noise
WORLD_STEPS = 150
GENERATED_FRAMES = 8
QUICK_VAE = ["train.progress=false", f"train.steps={VAE_STEPS}", f"train.checkpoint_every={VAE_STEPS}"]
QUICK_WORLD = ["train.progress=false", f"train.steps={WORLD_STEPS}", f"train.checkpoint_every={WORLD_STEPS}"]


def psnr(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean PSNR in dB of uint8 frames (N, H, W, 3)."""
    mse = ((pred.astype(np.float64) - target.astype(np.float64)) ** 2).mean(axis=(1, 2, 3))
    return float(np.mean(10 * np.log10(255.0**2 / mse)))


def noise_like(frames: np.ndarray) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, frames.shape, dtype=np.uint8)


@dataclass
class QuickStart:
    root: Path
    vae: Path  # what each run's write_world returned
    world: Path
    heldout: np.ndarray  # uint8 (60, H, W, 3): an episode of the same landscape that neither run trained on
    heldout_actions: torch.Tensor


def run_quick_start(root: Path, data_folder: str, size: tuple[int, int], configs: tuple[str, str],
                    overrides: tuple[list[str], list[str]]) -> QuickStart:
    """The README's quick-start in a fresh working directory (the configs' relative paths): panorama data with
    its last episode held out, then the VAE config, then the world config over it."""
    data = root / "data" / data_folder
    write_panorama_dataset(data, episodes=3, frames=60, size=size, seed=0)
    (root / "heldout").mkdir()
    for path in data.glob("episode_002.*"):
        path.rename(root / "heldout" / path.name)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        vae = train(load_train_config(configs[0], overrides[0]))
        world = train(load_train_config(configs[1], overrides[1]))
    episode = find_episodes([root / "heldout"])[0]
    frames = episode.require_frames().read(list(range(episode.num_frames)))
    return QuickStart(root, root / vae.world, root / world.world, frames, episode.actions)


def generated_psnr(quick_start: QuickStart) -> tuple[float, float, float]:
    """PSNR of the prompt frame and of GENERATED_FRAMES frames played from the held-out episode's first frame
    with its actions, against that episode, and of noise against it."""
    session = open_session(quick_start.world, device="cpu", allow_download=False)
    frames = quick_start.heldout[:GENERATED_FRAMES + 1]
    session.reset(torch.from_numpy(frames[:1]).permute(0, 3, 1, 2).float() / 255)
    prompt = psnr(session.prompt_frames().numpy(), frames[:1])
    generated_frames = np.stack([session.step(quick_start.heldout_actions[j]).frame.numpy()
                                 for j in range(1, GENERATED_FRAMES + 1)])
    return prompt, psnr(generated_frames, frames[1:]), psnr(noise_like(frames), frames)


@pytest.fixture(scope="module")
def quick_start(tmp_path_factory) -> QuickStart:
    return run_quick_start(tmp_path_factory.mktemp("quick_start"), "panorama", (40, 60),
                           ("oasis_vae_tiny", "oasis_tiny"), (QUICK_VAE, QUICK_WORLD))


def test_the_vae_run_writes_a_rescaled_vae_that_reconstructs_heldout_frames(quick_start):
    run = quick_start.root / "runs" / "oasis_vae_tiny"
    assert quick_start.vae == run / "vae.safetensors"
    assert (run / "reconstructions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    vae = OasisVAE(**OmegaConf.to_container(load_train_config("oasis_vae_tiny").model.vae))
    state = load_file(run / "vae.safetensors")
    assert set(state) == set(vae.state_dict())
    vae.load_state_dict(state)
    vae.eval()

    images = to_model_frames(quick_start.heldout)
    reconstructed = psnr(to_uint8(reconstruct(vae, images)), quick_start.heldout)
    noise = psnr(noise_like(quick_start.heldout), quick_start.heldout)
    print(f"oasis_vae_tiny after {VAE_STEPS} steps: held-out reconstruction PSNR {reconstructed:.1f} dB, "
          f"noise {noise:.1f} dB")
    assert reconstructed > noise + 10

    training = find_episodes([quick_start.root / "data" / "panorama"])[0].require_frames()
    with torch.no_grad():
        mean, _ = vae.encode(to_model_frames(training.read(range(0, training.num_frames, 2))))
    assert 0.8 < float((mean * OASIS_LATENT_SCALE).std()) < 1.25  # what the DiT sees has unit scale

    written = (run / "vae.safetensors").read_bytes()
    with pytest.MonkeyPatch.context() as patch:  # the same command again: a finished run writes the same VAE
        patch.chdir(quick_start.root)
        again = train(load_train_config("oasis_vae_tiny", QUICK_VAE))
    assert again.losses == [] and again.world == Path("runs/oasis_vae_tiny/vae.safetensors")
    assert (run / "vae.safetensors").read_bytes() == written


def test_the_tiny_world_trained_on_it_resembles_the_data(quick_start):
    world = yaml.safe_load(quick_start.world.read_text())
    assert Path(world["checkpoints"]["files"]["vae"]) == quick_start.vae.resolve()
    prompt, generated, noise = generated_psnr(quick_start)
    print(f"oasis_tiny after {WORLD_STEPS} steps on that VAE, against a held-out episode: prompt frame "
          f"{prompt:.1f} dB, {GENERATED_FRAMES} generated frames {generated:.1f} dB, noise {noise:.1f} dB")
    assert prompt > noise + 10
    assert generated > noise + 5


def test_the_tiny_worldmar_world_trained_on_its_own_vae_resembles_the_data(tmp_path):
    """`worldmar_vae_tiny` (fewer steps) then `worldmar_tiny` as shipped: memory frames by pose, masked tokens
    and the diffusion head, played from a held-out panorama episode's first frame with its actions."""
    quick = run_quick_start(tmp_path, "panorama_mar", (72, 128), ("worldmar_vae_tiny", "worldmar_tiny"),
                            (QUICK_VAE, ["train.progress=false"]))
    world = yaml.safe_load(quick.world.read_text())
    assert world["family"] == "worldmar" and Path(world["checkpoints"]["files"]["vae"]) == quick.vae.resolve()
    prompt, generated, noise = generated_psnr(quick)
    print(f"worldmar_tiny on a {VAE_STEPS}-step worldmar_vae_tiny, against a held-out episode: prompt frame "
          f"{prompt:.1f} dB, {GENERATED_FRAMES} generated frames {generated:.1f} dB, noise {noise:.1f} dB")
    assert prompt > noise + 10
    assert generated > noise + 5


def test_scale_latents_keeps_the_reconstructions():
    torch.manual_seed(0)
    vae = OasisVAE(latent_dim=4, input_height=8, input_width=12, patch_size=4, enc_dim=16, enc_depth=1,
                   enc_heads=2, dec_dim=16, dec_depth=1, dec_heads=2).eval()
    images = torch.rand(2, 3, 8, 12) * 2 - 1
    with torch.no_grad():
        mean, logvar = vae.encode(images)
        before = vae.decode(mean)
        scale_latents(vae, 5.0)
        scaled_mean, scaled_logvar = vae.encode(images)
        after = vae.decode(scaled_mean)
    torch.testing.assert_close(scaled_mean, 5 * mean)
    torch.testing.assert_close(scaled_logvar, logvar + 2 * np.log(5.0))
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


def test_episode_frames_are_every_stride_th_frame_of_every_episode(quick_start):
    episodes = find_episodes([quick_start.root / "data" / "panorama"])
    frames = EpisodeFrames(episodes, stride=7, frame_size=(20, 30))
    assert len(frames) == 2 * 9  # frames 0, 7, ..., 56 of each 60-frame episode
    item = frames[10]
    assert int(item["episode"]) == 1 and int(item["frame_index"]) == 7
    assert item["frames"].shape == (3, 20, 30) and -1 <= float(item["frames"].min()) <= float(item["frames"].max()) <= 1
    torch.testing.assert_close(item["frames"], to_model_frames(episodes[1].frames.read([7]), (20, 30))[0])
    with pytest.raises(ConfigError, match="stride >= 1, got 0"):
        EpisodeFrames(episodes, stride=0)


@pytest.mark.parametrize(("vae_config", "world_config"), [("oasis_vae_tiny", "oasis_tiny"),
                                                          ("worldmar_vae_tiny", "worldmar_tiny")])
def test_each_tiny_world_reads_the_vae_its_vae_config_writes(vae_config, world_config):
    vae, world = load_train_config(vae_config), load_train_config(world_config)
    assert vae.family == "oasis_vae" and vae.model.vae == world.model.vae
    assert list(vae.data.paths) == list(world.data.paths)
    assert world.model.vae_weights == f"./{vae.output_dir}/vae.safetensors"


def test_no_training_config_reads_the_reference_fixtures():
    configs = sorted(CONFIGS_DIR.glob("*.yaml"))
    assert configs
    for path in configs:
        text = path.read_text()
        assert "shared/" not in text and "WM_FIXTURES" not in text, path.name


def test_a_missing_vae_and_a_bad_loss_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as missing:
        build_recipe(load_train_config("oasis_tiny"), torch.device("cpu"))
    assert str(missing.value) == ("model.vae_weights: runs/oasis_vae_tiny/vae.safetensors does not exist "
                                  "(train it first: python -m engine.train --config oasis_vae_tiny)")
    with pytest.raises(ConfigError) as bad:
        load_train_config("oasis_vae_tiny", ["loss.reconstruction=l2"])
    assert "loss.reconstruction" in str(bad.value) and "\n" not in str(bad.value)
    assert os.listdir(tmp_path) == []
