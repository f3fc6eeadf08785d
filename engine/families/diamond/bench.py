"""DIAMOND ticks, our play loop vs the plain reference algorithm in the same process, full-size networks with
random weights, same settings, same noise, ticks timed alternately.

- csgo: the CS:GO world's own session (`CsgoSession.step`) vs `ReferenceTick` (WorldModelEnv.step of the csgo
  branch): next frame at 30x56 with the denoiser, bicubic x5, the upsampler at 150x280, then the uint8 frame.
- atari: the main branch's WorldModelEnv.step (3 Euler steps of the 64x64 denoiser, the reward/end model, the
  buffers rolled) vs the Atari world's own session (`AtariSession.step`: `PlayDenoiser`, an `EdmSampler`, ring
  buffers, the networks through the backend). The actions follow a fixed script so that both see the same frames.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Categorical

from engine.actions.atari import one_hot
from engine.actions.keymap import Keymap
from engine.backends.base import Backend
from engine.backends.choose import make_backend
from engine.backends.device import device_name, dtype_name, sync
from engine.core.config import load_world_config
from engine.core.networks import build_networks
from engine.core.noise import NoiseSource, SeededNoise
from engine.core.timing import StageTimer
from engine.families.diamond.agent import (
    RewEndModel,
)
from engine.families.diamond.atari import AtariSession, sampler_config
from engine.families.diamond.csgo import CsgoSession, ReferenceTick, preset_settings, to_uint8
from engine.families.diamond.denoiser import Denoiser
from engine.families.diamond.edm import EdmSamplerConfig, sample_reference

# eloialonso/diamond main branch, config/agent/default.yaml (env size 64) and config/trainer.yaml's sampler.
ATARI_GAME = "Alien"  # a game with all 18 ALE actions; its networks are the world yaml's (full size)
BACKEND_LOOP = "play+backend"  # the play tick through the chosen backend, when it is not eager


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
    low = random_frames((1, frames, 3, *low_size), 2, device)
    full = F.interpolate(low[0], scale_factor=factor, mode="bicubic").clamp(-1, 1)[None]
    actions = [a.to(device) for a in csgo_actions(warmup + ticks + frames)]
    spawn_act = torch.stack(actions[:frames])[None]
    chosen = make_backend(backend, device, dtype)
    reference = ReferenceTick(denoiser, upsampler, next_cfg, up_cfg, frames)
    reference.reset(low, full, spawn_act)
    reference_noise = SeededNoise(0, device)
    loops: dict[str, Callable[[int], torch.Tensor]] = {
        "reference": lambda j: to_uint8(reference.step(actions[frames + j], reference_noise)[1][0])}
    timers = {"reference": reference.timer}

    def session(through: Backend | None) -> CsgoSession:
        """The world's session, started at this random spawn point instead of a spawn folder's."""
        made = CsgoSession(cfg, denoiser, upsampler, [], backend=through)
        made.tick.reset(low, full, spawn_act)
        return made

    sessions = play_loops(session, chosen)
    for name, play in sessions.items():
        loops[name] = lambda j, play=play: play.step(actions[frames + j]).frame
        timers[name] = play.timer
    results = time_interleaved(loops, ticks, warmup, device, timers)
    play = sessions["play"].tick
    return {"bench": "csgo", "device": device_name(device), "dtype": dtype_name(dtype), "preset": preset,
            "low_res": list(low_size), "full_res": [height, width],
            "denoiser_calls_per_tick": [len(play.next_denoiser.conditioners), len(play.up_denoiser.conditioners)],
            "parameters": sum(p.numel() for m in (denoiser, upsampler) for p in m.parameters()),
            **compare(results, ticks, warmup, chosen)}


# Atari


class AtariReferenceTick:
    """WorldModelEnv.step of the main branch: the denoiser's sampling loop, the reward/end model, rolled buffers."""

    def __init__(self, denoiser: Denoiser, rew_end: RewEndModel, settings: EdmSamplerConfig) -> None:
        self.denoiser, self.rew_end, self.settings = denoiser, rew_end, settings
        self.timer = StageTimer(denoiser.device)

    def reset(self, obs: torch.Tensor, act: torch.Tensor) -> None:
        self.obs_buffer, self.act_buffer = obs.clone(), act.clone()
        *_, self.hx_cx = self.rew_end.predict_rew_end(obs[:, :-1], act[:, :-1], obs[:, 1:])

    def step(self, act: torch.Tensor, noise: NoiseSource) -> torch.Tensor:
        self.act_buffer[:, -1] = act
        with self.timer.stage("sample"):
            next_obs, _ = sample_reference(self.denoiser.denoise, self.obs_buffer, self.act_buffer, self.settings,
                                           noise)
        with self.timer.stage("reward"):
            logits_rew, logits_end, self.hx_cx = self.rew_end.predict_rew_end(
                self.obs_buffer[:, -1:], self.act_buffer[:, -1:], next_obs[:, None], self.hx_cx)
            self.reward = Categorical(logits=logits_rew).sample().squeeze(1) - 1.0
            self.end = Categorical(logits=logits_end).sample().squeeze(1)
        self.obs_buffer = self.obs_buffer.roll(-1, dims=1)
        self.act_buffer = self.act_buffer.roll(-1, dims=1)
        self.obs_buffer[:, -1] = next_obs
        return next_obs


@torch.no_grad()
def run_atari(device: torch.device, dtype: torch.dtype, ticks: int = 5, warmup: int = 1, backend: str = "eager") -> dict:
    """The Atari world's own session (`AtariSession.step`, eager and through `backend`) against WorldModelEnv.step."""
    if dtype != torch.float32:
        raise ValueError("the Atari bench runs float32 (the reward/end LSTM has no reduced-precision path here)")
    cfg = load_world_config("atari", [f"game={ATARI_GAME}"])
    networks = build_networks(cfg, device)
    for seed, role in enumerate(("denoiser", "rew_end_model", "actor_critic")):
        randomize(networks[role], seed)
    denoiser = networks["denoiser"]
    t = denoiser.cfg.inner_model.num_steps_conditioning
    size = int(cfg.env.size)
    obs = random_frames((1, t, 3, size, size), 3, device)
    num_actions = denoiser.cfg.inner_model.num_actions
    script = torch.arange(warmup + ticks + t, device=device) % num_actions
    chosen = make_backend(backend, device, dtype)
    reference = AtariReferenceTick(denoiser, networks["rew_end_model"], sampler_config(cfg))
    reference.reset(obs, script[:t][None].clone())
    reference_noise = SeededNoise(0, device)
    loops: dict[str, Callable[[int], torch.Tensor]] = {
        "reference": lambda j: to_uint8(reference.step(script[t + j], reference_noise)[0])}
    timers = {"reference": reference.timer}
    sessions = play_loops(lambda through: AtariSession(cfg, networks, obs[0], script[:t].cpu(), backend=through), chosen)
    for name, session in sessions.items():
        loops[name] = lambda j, session=session: session.step(one_hot(script[t + j], num_actions, device)).frame
        timers[name] = session.timer
    results = time_interleaved(loops, ticks, warmup, device, timers)
    parameters = sum(p.numel() for m in networks.values() for p in m.parameters())
    return {"bench": "atari", "device": device_name(device), "dtype": dtype_name(dtype), "image": size,
            "num_actions": num_actions, "denoiser_steps": reference.settings.num_steps_denoising,
            "parameters": parameters, **compare(results, ticks, warmup, chosen)}


def print_table(result: dict) -> None:
    what = (f"preset {result['preset']}, {result['low_res'][0]}x{result['low_res'][1]} -> "
            f"{result['full_res'][0]}x{result['full_res'][1]}, denoiser calls {result['denoiser_calls_per_tick']}"
            if result["bench"] == "csgo" else f"{result['image']}x{result['image']}, "
            f"{result['denoiser_steps']} denoising steps + reward/end")
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


def bench_csgo(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict:
    return run_csgo(device, dtype, preset=args.preset, ticks=args.ticks or (20 if device.type == "cuda" else 3),
                    backend=args.backend)


def bench_atari(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict:
    return run_atari(device, torch.float32, ticks=args.ticks or (20 if device.type == "cuda" else 5), backend=args.backend)
