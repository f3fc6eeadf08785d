"""`python -m bench doom`: the Doom world's whole tick (`DoomDreamSession.step`: pose, memory recall, the EDM
steps, memory insert) against the plain DIAMOND-style play loop at the same size (DIAMOND's inner model and
`sample_reference` at 64x80 with the same channels, depths, context and steps, the buffers rolled each tick:
eloialonso/diamond `WorldModelEnv.step`), in one process, random weights, ticks timed alternately.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from engine.actions import doom as actions
from engine.backends.device import device_name, dtype_name
from engine.core.config import load_world_config
from engine.core.noise import SeededNoise
from engine.families.diamond.bench import randomize, time_interleaved
from engine.families.diamond.denoiser import Denoiser, DenoiserConfig
from engine.families.diamond.edm import EdmSamplerConfig, sample_reference
from engine.families.doom.network import DoomWorldModel
from engine.families.doom.world import DoomDreamSession, spawn, to_uint8, to_unit


def diamond_denoiser(network: dict) -> Denoiser:
    """DIAMOND's denoiser with the Doom network's channels, depths, context and actions, at full resolution."""
    return Denoiser(DenoiserConfig.from_dict({
        "sigma_data": network["sigma_data"], "sigma_offset_noise": network["sigma_offset_noise"],
        "inner_model": {"img_channels": 3, "num_steps_conditioning": network["context"],
                        "cond_channels": network["cond_channels"], "depths": network["depths"],
                        "channels": network["channels"], "attn_depths": network["attn_depths"],
                        "num_actions": network["action_dim"], "is_upsampler": False}}))


class DiamondPlayLoop:
    """WorldModelEnv.step: the reference sampling loop on the last frames and actions, then roll the buffers."""

    def __init__(self, denoiser: Denoiser, settings: EdmSamplerConfig, frames: torch.Tensor, context: int) -> None:
        self.denoiser, self.settings = denoiser, settings
        self.obs = to_unit(frames)[None].expand(1, context, -1, -1, -1).clone()
        self.act = torch.zeros((1, context, actions.NUM_ACTIONS), device=frames.device)
        self.noise = SeededNoise(0, frames.device)

    def step(self, action: torch.Tensor) -> torch.Tensor:
        self.act[:, -1] = action
        dtype = self.denoiser.dtype
        next_obs, _ = sample_reference(
            lambda x, s, o, a, c: self.denoiser.denoise(x.to(dtype), s.to(dtype), o.to(dtype), a.to(dtype), c).float(),
            self.obs, self.act, self.settings, self.noise)
        self.obs = self.obs.roll(-1, dims=1)
        self.act = self.act.roll(-1, dims=1)
        self.obs[:, -1] = next_obs
        return to_uint8(next_obs[0])


def remembered_walk(frame: torch.Tensor, pose: torch.Tensor, count: int) -> tuple[torch.Tensor, ...]:
    """`count` frames on a circle of 200 map units through the spawn pose, turning all the way round twice: a
    memory as full as after a long walk, so recall runs over as many candidates as in play."""
    angle = torch.linspace(0, 4 * torch.pi, count)
    poses = pose.expand(count, 5).clone()
    poses[:, 0] += 200 * (torch.cos(angle) - 1)
    poses[:, 2] += 200 * torch.sin(angle)
    poses[:, 4] = torch.remainder(pose[4] + torch.rad2deg(angle) + 180, 360) - 180
    poses[-1] = pose
    return frame.expand(count, *frame.shape).clone(), torch.zeros((count, actions.NUM_ACTIONS)), poses


def walk_script(count: int) -> list[torch.Tensor]:
    """Out and back, turning and strafing near the start, so that the memory fills and recalls the remembered
    frames on nearly every tick (30 of 33 here): the tick with recall and memory guidance is the one timed."""
    script = [actions.encode(["forward"]), actions.encode([], 14.0625), actions.encode(["backward"]),
              actions.encode(["forward"], 10.0), actions.encode(["strafe_left"]), actions.encode(["backward"], -8.0),
              actions.encode(["strafe_right"])]
    return [torch.from_numpy(script[(j // 6) % len(script)]) for j in range(count)]


@torch.no_grad()
def run(device: torch.device, dtype: torch.dtype, ticks: int = 30, warmup: int = 3, steps: int | None = None) -> dict:
    cfg = load_world_config("doom", [f"sampler.num_steps_denoising={steps}"] if steps else [])
    network = dict(cfg.networks.world_model)
    with torch.device(device):
        model = randomize(DoomWorldModel(**network), 0).eval().to(dtype)
        reference = randomize(diamond_denoiser(network), 1).eval().to(dtype)
    frame, pose, _ = spawn(cfg, 0)
    session = DoomDreamSession(cfg, model, frame, pose)
    session.start_from(*remembered_walk(frame, pose, int(cfg.memory.capacity) - 8))
    sampler = cfg.sampler
    settings = EdmSamplerConfig(num_steps_denoising=int(sampler.num_steps_denoising), sigma_min=float(sampler.sigma_min),
                                sigma_max=float(sampler.sigma_max), rho=float(sampler.rho), order=1)
    plain = DiamondPlayLoop(reference, settings, frame.to(device), int(network["context"]))
    script = walk_script(warmup + ticks)
    loops = {"reference": lambda j: plain.step(script[j].to(device)),
             "play": lambda j: session.step(script[j]).frame}
    results = time_interleaved(loops, ticks, warmup, device, {"play": session.timer})
    ref_ms, play_ms = (statistics.median(results[name][0]) for name in ("reference", "play"))
    stages = results["play"][2]
    return {"bench": "doom", "device": device_name(device), "dtype": dtype_name(dtype), "ticks": ticks,
            "frame_size": list(network["frame_size"]), "denoising_steps": settings.num_steps_denoising,
            "parameters": sum(p.numel() for p in model.parameters()),
            "reference_parameters": sum(p.numel() for p in reference.parameters()),
            "reference_ms": round(ref_ms, 1), "play_ms": round(play_ms, 1),
            "reference_ticks_per_s": round(1000 / ref_ms, 1), "play_ticks_per_s": round(1000 / play_ms, 1),
            "speedup": round(ref_ms / play_ms, 2),
            "stages_ms": {name: round(statistics.median(tick[name] for tick in stages), 2) for name in stages[0]},
            "memory_frames": len(session.bank)}


def print_table(result: dict) -> None:
    print(f"doom  {result['frame_size'][0]}x{result['frame_size'][1]}, {result['denoising_steps']} denoising steps, "
          f"{result['parameters']:,} parameters (DIAMOND at the same size: {result['reference_parameters']:,}), "
          f"{result['device']}, {result['dtype']}, {result['ticks']} ticks")
    print(f"  {'DIAMOND loop':>14} {result['reference_ms']:>8} ms/tick  {result['reference_ticks_per_s']:>6} ticks/s")
    stages = " + ".join(f"{name} {ms}" for name, ms in result["stages_ms"].items())
    print(f"  {'doom session':>14} {result['play_ms']:>8} ms/tick  {result['play_ticks_per_s']:>6} ticks/s   ({stages} ms)")
    print(f"  speed-up {result['speedup']}x; memory bank {result['memory_frames']} frames")


def bench(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict:
    return run(device, dtype, ticks=args.ticks or 30)
