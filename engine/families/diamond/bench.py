"""DIAMOND ticks, our play loop vs the plain reference algorithm in the same process, full-size networks with
random weights, same settings, same noise, ticks timed alternately.

- csgo: `engine.families.diamond.csgo.PlayTick` vs `ReferenceTick` (WorldModelEnv.step of the csgo branch): next frame at
  30x56 with the denoiser, bicubic x5, the upsampler at 150x280, then the uint8 frame.
- atari: the main branch's WorldModelEnv.step (3 Euler steps of the 64x64 denoiser, the reward/end model, the
  buffers rolled) plus the agent's policy step, vs the same tick with `PlayDenoiser`, an `EdmSampler` and ring
  buffers. The actions follow a fixed script so that both loops see the same frames.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Categorical

from bench.device import device_name, sync
from engine.actions.keymap import Keymap
from engine.backends.base import Backend
from engine.backends.choose import make_backend
from engine.backends.device import dtype_name
from engine.core.config import load_world_config
from engine.core.networks import build_networks
from engine.core.noise import NoiseSource, SeededNoise
from engine.core.ring import Ring
from engine.core.timing import StageTimer
from engine.families.diamond.agent import (
    ActorCritic,
    ActorCriticConfig,
    RewEndModel,
    RewEndModelConfig,
    policy_action,
)
from engine.families.diamond.csgo import PlayTick, ReferenceTick, preset_settings, to_uint8
from engine.families.diamond.denoiser import Denoiser, DenoiserConfig
from engine.families.diamond.edm import EdmSamplerConfig, sample_reference
from engine.families.diamond.play import play_sampler
from engine.families.diamond.units import ActorCriticStep, RewEndStep, actor_critic_example, rew_end_example

# eloialonso/diamond main branch, config/agent/default.yaml (env size 64) and config/trainer.yaml's sampler.
ATARI_IMAGE = 64
ATARI_ACTIONS = 18
ATARI_DENOISER = {"sigma_data": 0.5, "sigma_offset_noise": 0.3, "inner_model": {
    "img_channels": 3, "num_steps_conditioning": 4, "cond_channels": 256, "depths": [2, 2, 2, 2],
    "channels": [64, 64, 64, 64], "attn_depths": [0, 0, 0, 0], "num_actions": ATARI_ACTIONS}}
ATARI_REW_END = {"lstm_dim": 512, "img_channels": 3, "img_size": ATARI_IMAGE, "cond_channels": 128,
                 "depths": [2, 2, 2, 2], "channels": [32, 32, 32, 32], "attn_depths": [0, 0, 0, 0],
                 "num_actions": ATARI_ACTIONS}
ATARI_ACTOR_CRITIC = {"lstm_dim": 512, "img_channels": 3, "img_size": ATARI_IMAGE, "channels": [32, 32, 64, 64],
                      "down": [1, 1, 1, 1], "num_actions": ATARI_ACTIONS}
BACKEND_LOOP = "play+backend"  # the play tick through the chosen backend, when it is not eager
ATARI_SAMPLER = EdmSamplerConfig(num_steps_denoising=3, sigma_min=2e-3, sigma_max=5.0, rho=7)


def randomize(module: nn.Module, seed: int) -> nn.Module:
    """Weights ~ N(0, 1/fan_in), vectors ~ U(-0.1, 0.1): activations of a sane scale at any size."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            if param.dim() > 1:
                values = torch.randn(param.shape, generator=generator) * param[0].numel() ** -0.5
            else:
                values = torch.rand(param.shape, generator=generator) * 0.2 - 0.1
            param.copy_(values)
    return module


def random_frames(shape: tuple[int, ...], seed: int, device: torch.device) -> torch.Tensor:
    """uint8-valued frames in [-1, 1]: smooth gradients plus noise, like a real spawn point."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.rand((*shape[:-2], 4, 4), generator=generator)
    frames = F.interpolate(base.flatten(0, -3)[:, None], size=shape[-2:], mode="bilinear", align_corners=False)
    frames = (frames.reshape(shape) * 200 + torch.rand(shape, generator=generator) * 55).floor()
    return frames.div(255).mul(2).sub(1).to(device)


def time_interleaved(loops: dict[str, Callable[[int], torch.Tensor]], ticks: int, warmup: int, device: torch.device,
                     timers: dict[str, StageTimer] | None = None
                     ) -> dict[str, tuple[list[float], list[torch.Tensor], list[dict[str, float]]]]:
    """Warm each loop up, then time tick j of every loop before tick j + 1 of any, alternating which goes first,
    so that drifting machine speed (shared cores) hits all loops alike. Per loop: tick times (ms), frames and,
    for loops with a timer in `timers`, each tick's stage times."""
    timers = timers or {}
    for j in range(warmup):
        for step in loops.values():
            step(j)
    results = {name: ([], [], []) for name in loops}
    names = list(loops)
    for j in range(warmup, warmup + ticks):
        for name in names if j % 2 == 0 else names[::-1]:
            sync(device)
            start = time.perf_counter()
            frame = loops[name](j)
            sync(device)
            results[name][0].append((time.perf_counter() - start) * 1000)
            results[name][1].append(frame)
            if name in timers:
                results[name][2].append(timers[name].milliseconds())
    return results


def median_stages(stages: list[dict[str, float]]) -> dict[str, float]:
    """Median ms of each stage over the timed ticks."""
    return {name: round(statistics.median(tick[name] for tick in stages), 1) for name in stages[0]} if stages else {}


def frame_differences(expected: list[torch.Tensor], got: list[torch.Tensor]) -> dict:
    diffs = [(a.int() - b.int()).abs() for a, b in zip(expected, got, strict=True)]
    return {"max_abs_diff_u8": max(int(d.max()) for d in diffs),
            "differing_fraction": max(float((d > 0).float().mean()) for d in diffs)}


def compare(results: dict, ticks: int, warmup: int, backend: Backend) -> dict:
    """The reference against our eager play loop and, with another backend, the play loop through it."""
    ref_ms, fast_ms = statistics.median(results["reference"][0]), statistics.median(results["play"][0])
    stages = {name: median_stages(result[2]) for name, result in results.items()}
    figures = {
        "ticks": ticks, "warmup": warmup, "reference_ms": round(ref_ms, 1), "play_ms": round(fast_ms, 1),
        "reference_ms_all": [round(t, 1) for t in results["reference"][0]],
        "play_ms_all": [round(t, 1) for t in results["play"][0]],
        "reference_fps": round(1000 / ref_ms, 2), "play_fps": round(1000 / fast_ms, 2),
        "speedup": round(ref_ms / fast_ms, 2), **frame_differences(results["reference"][1], results["play"][1]),
        "backend": backend.label, "stages_ms": {"reference": stages["reference"], "play": stages["play"]},
    }
    if backend.name != "eager":
        times, frames, _ = results[BACKEND_LOOP]
        backend_ms = statistics.median(times)
        figures["play_backend"] = {"ms": round(backend_ms, 1), "fps": round(1000 / backend_ms, 2), "ms_all": [round(t, 1) for t in times],
                                   "speedup": round(ref_ms / backend_ms, 2), "stages_ms": stages[BACKEND_LOOP],
                                   **frame_differences(results["reference"][1], frames)}
    return figures


def play_loops(make: Callable[[Backend | None], Any], backend: Backend) -> dict[str, Any]:
    """The play tick eager and, with a backend other than eager, through it (warmed up)."""
    ticks = {"play": make(None)}
    if backend.name != "eager":
        ticks[BACKEND_LOOP] = make(backend)
        backend.warm_up()
    return ticks


# CS:GO


def csgo_actions(count: int) -> list[torch.Tensor]:
    """A varied input script (walking, strafing, turning, firing) through the world's keymap."""
    keymap = Keymap.load("csgo")
    script = [({"w"}, set(), 0, 0), ({"w", "a"}, set(), -12, 0), ({"d", "left shift"}, {"left"}, 30, -2),
              ({"space"}, set(), 0, 5), ({"s"}, {"right"}, -4, 1), (set(), set(), 0, 0)]
    return [keymap.to_action(frozenset(k), frozenset(b), dx, dy) for k, b, dx, dy in
            (script[j % len(script)] for j in range(count))]


@torch.no_grad()
def run_csgo(device: torch.device, dtype: torch.dtype, preset: str = "fast", ticks: int = 3, warmup: int = 1,
             backend: str = "eager") -> dict:
    cfg = load_world_config("csgo", [f"sampler.preset={preset}"])
    networks = build_networks(cfg, device)
    denoiser, upsampler = (randomize(networks[role], seed).to(dtype) for role, seed in (("denoiser", 0),
                                                                                       ("upsampler", 1)))
    _, next_cfg, up_cfg = preset_settings(cfg)
    factor = upsampler.cfg.upsampling_factor
    height, width = (int(n) for n in cfg.frame_size)
    low_size = (height // factor, width // factor)
    frames = max(denoiser.cfg.inner_model.num_steps_conditioning, upsampler.cfg.inner_model.num_steps_conditioning)
    num_actions = denoiser.cfg.inner_model.num_actions
    low = random_frames((1, frames, 3, *low_size), 2, device)
    full = F.interpolate(low[0], scale_factor=factor, mode="bicubic").clamp(-1, 1)[None]
    actions = [a.to(device) for a in csgo_actions(warmup + ticks + frames)]
    spawn_act = torch.stack(actions[:frames])[None]
    chosen = make_backend(backend, device, dtype)
    loops = {"reference": ReferenceTick(denoiser, upsampler, next_cfg, up_cfg, frames),
             **play_loops(lambda b: PlayTick(denoiser, upsampler, next_cfg, up_cfg, frames, low_size, num_actions,
                                             device, b), chosen)}
    noises = {}
    for name, tick in loops.items():
        tick.reset(low, full, spawn_act)
        noises[name] = SeededNoise(0, device)

    def loop(name: str, tick) -> Callable[[int], torch.Tensor]:
        return lambda j: to_uint8(tick.step(actions[frames + j], noises[name])[1][0])

    results = time_interleaved({name: loop(name, tick) for name, tick in loops.items()}, ticks, warmup, device,
                               {name: tick.timer for name, tick in loops.items()})
    play = loops["play"]
    return {"bench": "csgo", "device": device_name(device), "dtype": dtype_name(dtype), "preset": preset,
            "low_res": list(low_size), "full_res": [height, width],
            "denoiser_calls_per_tick": [len(play.next_denoiser.conditioners), len(play.up_denoiser.conditioners)],
            "parameters": sum(p.numel() for m in (denoiser, upsampler) for p in m.parameters()),
            **compare(results, ticks, warmup, chosen)}


# Atari


class AtariReferenceTick:
    """WorldModelEnv.step of the main branch, then the agent's policy step on the new frame."""

    def __init__(self, denoiser: Denoiser, rew_end: RewEndModel, actor_critic: ActorCritic) -> None:
        self.denoiser, self.rew_end, self.actor_critic = denoiser, rew_end, actor_critic
        self.timer = StageTimer(denoiser.inner_model.conv_in.weight.device)

    def reset(self, obs: torch.Tensor, act: torch.Tensor) -> None:
        self.obs_buffer, self.act_buffer = obs.clone(), act.clone()
        *_, self.hx_cx = self.rew_end.predict_rew_end(obs[:, :-1], act[:, :-1], obs[:, 1:])
        self.ac_state = None

    def step(self, act: torch.Tensor, noise: NoiseSource) -> torch.Tensor:
        self.act_buffer[:, -1] = act
        with self.timer.stage("sample"):
            next_obs, _ = sample_reference(self.denoiser.denoise, self.obs_buffer, self.act_buffer, ATARI_SAMPLER,
                                           noise)
        with self.timer.stage("reward"):
            logits_rew, logits_end, self.hx_cx = self.rew_end.predict_rew_end(
                self.obs_buffer[:, -1:], self.act_buffer[:, -1:], next_obs[:, None], self.hx_cx)
            self.reward = Categorical(logits=logits_rew).sample().squeeze(1) - 1.0
            self.end = Categorical(logits=logits_end).sample().squeeze(1)
        self.obs_buffer = self.obs_buffer.roll(-1, dims=1)
        self.act_buffer = self.act_buffer.roll(-1, dims=1)
        self.obs_buffer[:, -1] = next_obs
        with self.timer.stage("policy"):
            logits_act, _, self.ac_state = self.actor_critic.predict_act_value(next_obs, self.ac_state)
            self.policy = Categorical(logits=logits_act).sample()
        return next_obs


class AtariPlayTick:
    """The same tick with `PlayDenoiser`, an `EdmSampler`, ring buffers and sampling without host checks."""

    def __init__(self, denoiser: Denoiser, rew_end: RewEndModel, actor_critic: ActorCritic,
                 device: torch.device, backend: Backend | None = None) -> None:
        backend = backend or Backend(device, torch.float32)
        size = (ATARI_IMAGE, ATARI_IMAGE)
        self.sampler, self.play = play_sampler(denoiser, ATARI_SAMPLER, device, backend, "denoiser", size)
        self.rew_end = backend.compile_step(RewEndStep(rew_end), rew_end_example(rew_end), "rew_end_model")
        self.actor_critic = backend.compile_step(ActorCriticStep(actor_critic), actor_critic_example(actor_critic),
                                                 "actor_critic")
        self.burn_in, self.initial_ac_state = rew_end.predict_rew_end, actor_critic.initial_state
        self.timer = StageTimer(device)
        t = denoiser.cfg.inner_model.num_steps_conditioning
        self.obs = Ring((3, ATARI_IMAGE, ATARI_IMAGE), t, device)
        self.act = Ring((), t, device, dtype=torch.long)
        self.generator = torch.Generator(device).manual_seed(0)

    def reset(self, obs: torch.Tensor, act: torch.Tensor) -> None:
        self.obs.fill(obs)
        self.act.fill(act)
        *_, self.hx_cx = self.burn_in(obs[:, :-1], act[:, :-1], obs[:, 1:])
        self.ac_state = self.initial_ac_state(1)

    def step(self, act: torch.Tensor, noise: NoiseSource) -> torch.Tensor:
        self.act.set_newest(act)
        obs, acts = self.obs.window(self.obs.length), self.act.window(self.act.length)
        with self.timer.stage("sample"):
            self.play.begin(acts)
            next_obs, _ = self.sampler.sample(obs, acts, noise)
        with self.timer.stage("reward"):
            logits_rew, logits_end, *self.hx_cx = self.rew_end(obs[:, -1:], acts[:, -1:], next_obs[:, None],
                                                              *self.hx_cx)
            self.reward = policy_action(logits_rew[:, 0], self.generator) - 1.0
            self.end = policy_action(logits_end[:, 0], self.generator)
        self.obs.advance()
        self.act.advance()
        self.obs.set_newest(next_obs)
        with self.timer.stage("policy"):
            logits_act, _, *self.ac_state = self.actor_critic(next_obs, *self.ac_state)
            self.policy = policy_action(logits_act, self.generator)
        return next_obs


@torch.no_grad()
def run_atari(device: torch.device, dtype: torch.dtype, ticks: int = 5, warmup: int = 1, backend: str = "eager") -> dict:
    if dtype != torch.float32:
        raise ValueError("the Atari bench runs float32 (the reward/end LSTM has no reduced-precision path here)")
    with torch.device(device):
        denoiser = randomize(Denoiser(DenoiserConfig.from_dict(ATARI_DENOISER)), 0).eval()
        rew_end = randomize(RewEndModel(RewEndModelConfig.from_dict(ATARI_REW_END)), 1).eval()
        actor_critic = randomize(ActorCritic(ActorCriticConfig.from_dict(ATARI_ACTOR_CRITIC)), 2).eval()
    t = denoiser.cfg.inner_model.num_steps_conditioning
    obs = random_frames((1, t, 3, ATARI_IMAGE, ATARI_IMAGE), 3, device)
    script = torch.arange(warmup + ticks + t, device=device) % ATARI_ACTIONS
    chosen = make_backend(backend, device, dtype)
    loops = {"reference": AtariReferenceTick(denoiser, rew_end, actor_critic),
             **play_loops(lambda b: AtariPlayTick(denoiser, rew_end, actor_critic, device, b), chosen)}
    noises = {}
    for name, tick in loops.items():
        tick.reset(obs, script[:t][None].clone())
        noises[name] = SeededNoise(0, device)

    def loop(name: str, tick) -> Callable[[int], torch.Tensor]:
        return lambda j: to_uint8(tick.step(script[t + j], noises[name])[0])

    results = time_interleaved({name: loop(name, tick) for name, tick in loops.items()}, ticks, warmup, device,
                               {name: tick.timer for name, tick in loops.items()})
    parameters = sum(p.numel() for m in (denoiser, rew_end, actor_critic) for p in m.parameters())
    return {"bench": "atari", "device": device_name(device), "dtype": dtype_name(dtype), "image": ATARI_IMAGE,
            "num_actions": ATARI_ACTIONS, "denoiser_steps": ATARI_SAMPLER.num_steps_denoising,
            "parameters": parameters, **compare(results, ticks, warmup, chosen)}


def print_table(result: dict) -> None:
    what = (f"preset {result['preset']}, {result['low_res'][0]}x{result['low_res'][1]} -> "
            f"{result['full_res'][0]}x{result['full_res'][1]}, denoiser calls {result['denoiser_calls_per_tick']}"
            if result["bench"] == "csgo" else f"{result['image']}x{result['image']}, "
            f"{result['denoiser_steps']} denoising steps + reward/end + policy")
    print(f"{result['bench']}  full size ({result['parameters']:,} parameters), {what}, {result['device']}, "
          f"{result['dtype']}, {result['ticks']} ticks")
    for name in ("reference", "play"):
        print(f"  {name:>10} {result[f'{name}_ms']:>10} ms/tick   ({', '.join(map(str, result[f'{name}_ms_all']))})"
              f"   {stage_text(result['stages_ms'][name])}")
    print(f"  speed-up {result['speedup']}x; frames: max |difference| {result['max_abs_diff_u8']} levels, "
          f"at most {result['differing_fraction']:.2%} of the values differ")
    through = result.get("play_backend")
    if through:
        print(f"  play+{result['backend']:<6} {through['ms']:>7} ms/tick   ({', '.join(map(str, through['ms_all']))})"
              f"   {stage_text(through['stages_ms'])}")
        print(f"  speed-up {through['speedup']}x; frames: max |difference| {through['max_abs_diff_u8']} levels, "
              f"at most {through['differing_fraction']:.2%} of the values differ")


def stage_text(stages: dict[str, float]) -> str:
    """Median stage times, e.g. `next_frame 410.2 + upsample 580.1 ms`."""
    return " + ".join(f"{name} {ms}" for name, ms in stages.items()) + " ms" if stages else ""
