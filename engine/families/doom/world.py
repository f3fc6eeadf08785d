"""The Doom dream (`--world doom`, the default world): one tick per action, everything on the device.

Tick stages:
1. `pose`: the dreamer's pose integrated from the action with Doom's movement (`motion.DoomMotion`), blocked
   and sliding at the walls the last frames' predicted depth shows when the model has a depth network;
2. `memory`: the frames of the memory bank at least `min_age` ticks old whose views overlap the new pose's most
   (`recall.Recall`), with their poses relative to it; with `reproject_memory` the model sees them redrawn from
   the new pose by their predicted depth (`reproject`);
3. `sample`: a few EDM Euler steps of the world model on the context frames, their actions and the recalled
   frames (`network.DoomWorldModel`); with a blend network, the frame is then mixed per pixel with the
   reprojected recalled frames and, with `blend_newest`, the newest frame redrawn from the new pose (`blend`);
4. `store`: the new frame into the context ring and the memory bank (`engine.memory.bank`), which keeps
   covering every place and direction seen once it is full.

The dream starts from a frame of the real game (the `spawn:` section: the doom-game world's first frame at a
seed and start point), so `python launcher.py` needs nothing but the shipped checkpoint and vizdoom.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from engine.actions import doom as actions
from engine.core.config import load_world_config
from engine.core.noise import NoiseSource, ResettableNoise, SeededNoise
from engine.core.ring import Ring
from engine.core.session import SessionBase, SessionOptions, StepResult
from engine.errors import ConfigError
from engine.families.diamond.denoiser import quantize
from engine.families.diamond.edm import build_sigmas
from engine.families.doom.motion import FRICTION, WALL_FRAMES, DoomMotion
from engine.families.doom.network import DoomWorldModel, action_window, memory_pose_features
from engine.families.doom.recall import Recall
from engine.families.doom.reproject import reproject_drawn
from engine.families.vizdoom.world import spawn_frame
from engine.memory.bank import BankSettings, MemoryBank
from engine.recordings import read_recording

NETWORKS = {"world_model": DoomWorldModel}


def to_unit(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, H, W) in [-1, 1]."""
    return frames.movedim(-1, -3).float().div(255).mul(2).sub(1)


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """[-1, 1] (..., 3, H, W) -> uint8 (..., H, W, 3), rounded (the denoiser's output is already quantised)."""
    return frames.float().add(1).div(2).mul(255).round().clamp(0, 255).to(torch.uint8).movedim(-3, -1)


@dataclass(frozen=True)
class NewestView:
    """The newest context frames redrawn from the poses being made: frame (B, 3, H, W), drawn (B, 1, H, W) and
    their pose features relative to the new poses (B, 1, 6)."""

    frame: torch.Tensor
    drawn: torch.Tensor
    features: torch.Tensor

    def after(self, memory: torch.Tensor, drawn: torch.Tensor, memory_pose: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The blend network's sources: the recalled frames' (B, 3m, H, W), drawn masks (B, m, H, W) and pose
        features (B, m, 6), with this view as the last slot."""
        return (torch.cat([memory, self.frame.to(memory)], 1), torch.cat([drawn.to(self.drawn), self.drawn], 1),
                torch.cat([memory_pose, self.features.to(memory_pose)], 1))


def newest_view(frames: torch.Tensor, depth: torch.Tensor, poses: torch.Tensor, targets: torch.Tensor,
                pose_scale: float) -> NewestView:
    """The newest frames (B, 3, H, W) in [-1, 1], seen from poses (B, 5) with their planar depth (B, H, W),
    redrawn from the new poses (B, 5): in a static place the next frame is mostly the last one seen from where
    the player moved to (render, then refine: Liu et al. 2021, "Infinite Nature"; here the blend network refines)."""
    with torch.autocast(frames.device.type, enabled=False):  # the geometry in float32, also in bf16 training
        views, drawn = zip(*(reproject_drawn(frames[k:k + 1].float(), depth[k:k + 1].float(), poses[k:k + 1].float(),
                                             targets[k].float()) for k in range(len(frames))), strict=True)
    valid = torch.ones((len(frames), 1), dtype=torch.bool, device=frames.device)
    features = memory_pose_features(targets.float(), poses[:, None].float(), valid, pose_scale)
    return NewestView(torch.cat(views), torch.cat(drawn).float(), features)


class DoomSampler:
    """EDM Euler steps on a Karras schedule (Karras et al. 2022), from sigma_max noise to the frame.

    `memory_guidance` w > 0 is classifier-free guidance (Ho & Salimans 2022) on the recalled frames: while any
    slot holds one, each step denoises with and without them in one batch of two and takes
    D_memory + w * (D_memory - D_no_memory). The model learned the memoryless case from the items trained
    without memory (`data.memory_dropout`); guidance makes it lean on what it recalled. A world model with a blend
    network then mixes the frame with the recalled ones (`blend.MemoryBlend`); that network's training calls
    `denoise`, the steps alone, on batches of items for the frames it learns to mix.
    """

    def __init__(self, model: DoomWorldModel, sampler: DictConfig, noise: NoiseSource) -> None:
        self.model, self.noise = model, noise
        steps = int(sampler.num_steps_denoising)
        self.sigmas = build_sigmas(steps, float(sampler.sigma_min), float(sampler.sigma_max), float(sampler.rho),
                                   model.device)
        self.sigma_cond = torch.full((1,), float(sampler.get("context_sigma", 0.005)), device=model.device)
        self.memory_guidance = float(sampler.get("memory_guidance", 0.0))
        self.steps = steps

    def sample(self, context: torch.Tensor, memory: torch.Tensor, actions: torch.Tensor, memory_pose: torch.Tensor,
               drawn: torch.Tensor | None = None, newest: NewestView | None = None) -> torch.Tensor:
        """(B, 3, H, W) quantised frames in [-1, 1] from context (B, 3n, H, W), memory (B, 3m, H, W); with the
        model's blend network and `drawn` (B, m, H, W, `reproject_drawn`), mixed with the recalled frames and, with
        `blend_newest`, the newest context frame redrawn from the new pose (`newest`, `newest_view`)."""
        denoised = self.denoise(context, memory, actions, memory_pose)
        blend = self.model.blend_net
        if blend is None or drawn is None:
            return denoised
        if newest is not None:
            memory, drawn, memory_pose = newest.after(memory, drawn, memory_pose)
        elif not bool(memory_pose[..., -1].any()):
            return denoised
        mixed = blend(denoised.to(self.model.dtype), memory.to(self.model.dtype), drawn, memory_pose)
        return to_unit(to_uint8(mixed)).float()  # rounded: DIAMOND's snap down would darken a frame copied on

    def denoise(self, context: torch.Tensor, memory: torch.Tensor, actions: torch.Tensor,
                memory_pose: torch.Tensor) -> torch.Tensor:
        """The Euler steps alone: (B, 3, H, W) quantised frames in [-1, 1], as the world model makes them."""
        batch, height, width = len(context), *context.shape[-2:]
        dtype = self.model.dtype
        x = self.noise.draw((batch, 3, height, width), context.device) * self.sigmas[0]
        guided = self.memory_guidance > 0 and bool(memory_pose.any())
        if guided:  # rows 0..B-1 with the recalled frames, rows B.. without (zeros, as empty slots)
            context, actions = torch.cat([context, context]), torch.cat([actions, actions])
            memory = torch.cat([memory, torch.zeros_like(memory)])
            memory_pose = torch.cat([memory_pose, torch.zeros_like(memory_pose)])
        cond = [t.to(dtype) for t in (context, memory, actions, memory_pose)]
        rows = len(cond[0])
        sigma_cond = self.sigma_cond.expand(rows).to(dtype)
        denoised = x
        for sigma, next_sigma in zip(self.sigmas[:-1], self.sigmas[1:], strict=True):
            noisy = (x.repeat(2, 1, 1, 1) if guided else x).to(dtype)
            out = self.model.denoise_unquantized(noisy, sigma.reshape(1).expand(rows).to(dtype), *cond,
                                                 sigma_cond).float()
            if guided:
                out = out[:batch] + self.memory_guidance * (out[:batch] - out[batch:])
            denoised = quantize(out.to(dtype)).float()  # in the model's dtype, as `denoise` snaps
            x = x + (x - denoised) / sigma * (next_sigma - sigma)
        return denoised


def memory_settings(cfg: DictConfig) -> dict:
    memory = OmegaConf.to_container(cfg.get("memory") or OmegaConf.create({}), resolve=True)
    known = {"enabled", "capacity", "position_scale", "angle_scale", "recall"}
    unknown = sorted(set(memory) - known)
    if unknown:
        raise ConfigError(f"world '{cfg.name}': memory.{unknown[0]} is unknown (expected {', '.join(sorted(known))})")
    settings = {"enabled": True, "capacity": 512, "position_scale": 32.0, "angle_scale": 15.0, "recall": {}} | memory
    if not isinstance(settings["enabled"], bool):
        raise ConfigError(f"world '{cfg.name}': memory.enabled must be true or false, got {settings['enabled']!r}")
    if not isinstance(settings["capacity"], int) or settings["capacity"] < 32:
        raise ConfigError(f"world '{cfg.name}': memory.capacity must be an integer >= 32, got {settings['capacity']!r}")
    return settings


class DoomDreamSession(SessionBase):
    """One player in the Doom dream; `reset` goes back to the spawn frame with an empty memory."""

    family = "doom"

    def __init__(self, cfg: DictConfig, model: DoomWorldModel, spawn_frame: torch.Tensor, spawn_pose: torch.Tensor,
                 *, steps: int | None = None, seed: int = 0, memory_enabled: bool | None = None,
                 noise: ResettableNoise | None = None, checkpoint_files: dict[str, Path] | None = None,
                 spawn_info: dict | None = None) -> None:
        sampler = cfg.sampler
        if steps is not None:
            sampler = OmegaConf.merge(sampler, {"num_steps_denoising": int(steps)})
        mcfg = model.cfg
        super().__init__(cfg, device=model.device, dtype=model.dtype, action_dim=mcfg.action_dim,
                         frame_size=mcfg.frame_size, steps=int(sampler.num_steps_denoising), seed=seed,
                         sampler="euler", checkpoint_files=checkpoint_files, default_fps=17)
        if tuple(spawn_frame.shape) != (*mcfg.frame_size, 3) or spawn_frame.dtype != torch.uint8:
            raise ConfigError(f"world '{self.world}': the spawn frame is {tuple(spawn_frame.shape)} "
                              f"{spawn_frame.dtype}, the model makes {mcfg.frame_size[0]}x{mcfg.frame_size[1]} "
                              "uint8 RGB frames")
        self.model = model.eval()
        self.context_window = mcfg.context
        self.memory = memory_settings(cfg)
        if memory_enabled is not None:
            self.memory["enabled"] = bool(memory_enabled)
        self.spawn_info = spawn_info or {}
        self.noise = noise or SeededNoise(seed, self.device)
        self.sampler = DoomSampler(model, sampler, self.noise)
        self.motion = DoomMotion(spawn_pose, int(cfg.get("frame_skip", actions.FRAME_SKIP)), self.device)
        self.recall = Recall(**self.memory["recall"], seed=seed, device=self.device)
        height, width = mcfg.frame_size
        self.bank = MemoryBank(int(self.memory["capacity"]), (3, height, width), self.action_dim, self.device,
                               settings=BankSettings(keep_recent=mcfg.context + 1,
                                                     position_scale=float(self.memory["position_scale"]),
                                                     angle_scale=float(self.memory["angle_scale"])))
        self._spawn = to_unit(spawn_frame.to(self.device))
        self._frames = Ring((3, height, width), mcfg.context, self.device)
        self._actions = Ring((mcfg.action_dim,), mcfg.context, self.device)
        self._memory = torch.zeros((mcfg.memory, 3, height, width), device=self.device)
        self._memory_poses = torch.zeros((mcfg.memory, 5), device=self.device)
        self._drawn = torch.zeros((mcfg.memory, height, width), dtype=torch.bool, device=self.device)
        self._recalled = torch.full((mcfg.memory,), -1, dtype=torch.int64, device=self.device)
        self._history: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        if model.depth_net is not None:  # each stored frame's predicted depth, made when first needed
            self._slot_depth = torch.zeros((self.bank.capacity, height, width), device=self.device)
            self._slot_has_depth = torch.zeros(self.bank.capacity, dtype=torch.bool, device=self.device)
        self.reset()

    @property
    def pose(self) -> torch.Tensor:
        return self.motion.pose

    @property
    def frame_index(self) -> int:
        return self._count

    @torch.no_grad()
    def reset(self) -> None:
        """Back to the start: the spawn frame with an empty memory, or the recorded history it was opened on."""
        self._restart()
        if self._history is not None:
            self._continue(*self._history)

    def _restart(self) -> None:
        self.noise.reset()
        self.motion.reset()
        self.motion.forget_walls()
        self.bank.clear()
        self._frames.fill(self._spawn[None, None].expand(1, self.model.cfg.context, -1, -1, -1))
        self._actions.fill(torch.zeros((1, self.model.cfg.context, self.action_dim), device=self.device))
        self._last_slot = self.bank.insert(self._spawn, self.motion.pose, torch.zeros(self.action_dim, device=self.device), 0)
        self._recalled.fill_(-1)
        self._count = 1
        self._pose_before = self.motion.pose
        self.last_action = torch.zeros(self.action_dim)
        self._see()

    def _see(self, replace_newest: bool = False, dreamed: bool = False) -> None:
        """With a depth network: the depth of the newest stored frame, and from it the walls the next moves meet
        (`replace_newest`: instead of those of the frame it replaced; `dreamed`: a frame the model made, which adds
        walls but removes none). Made unconditionally (no look at the cache, which would cost a host sync on a
        GPU)."""
        if self.model.depth_net is not None:
            self._predict_depth(slice(self._last_slot, self._last_slot + 1))
            self.motion.see(self._slot_depth[self._last_slot], replace_newest, carve=not dreamed)

    def _depth_of(self, slots: torch.Tensor) -> torch.Tensor:
        """(len(slots), H, W) predicted depth of stored frames, made for those that have none yet."""
        missing = slots[~self._slot_has_depth[slots]]
        if len(missing):
            self._predict_depth(missing)
        return self._slot_depth[slots]

    def _predict_depth(self, slots: torch.Tensor | slice) -> None:
        """The depth network on the stored frames of `slots`, kept in the per-slot cache."""
        self._slot_depth[slots] = self.model.depth_net.depth(self.bank.latents[slots].to(self.model.dtype)).float()
        self._slot_has_depth[slots] = True

    def prompt_frames(self) -> torch.Tensor:
        return to_uint8(self._frames.window(1)[0]) if self._history is not None else to_uint8(self._spawn)[None]

    def open_on(self, frames: torch.Tensor, actions_: torch.Tensor, poses: torch.Tensor) -> None:
        """Start (and restart, on reset) after recorded frames instead of the spawn frame."""
        self._history = (frames, actions_, poses)
        self.reset()

    def _recall(self, pose: torch.Tensor) -> None:
        """Fill the memory slots with the bank's best frames for `pose` among those at least `min_age` ticks old."""
        m = self.model.cfg.memory
        self._memory.zero_()
        self._drawn.zero_()
        self._recalled.fill_(-1)
        if not self.memory["enabled"] or m == 0:
            return
        stored = torch.arange(len(self.bank), device=self.device)
        numbers = self.bank.frame_index[stored]
        older = stored[numbers <= self.recall.newest_candidate(self._count, self.model.cfg.context)]
        if len(older) == 0:
            return
        older = older[torch.argsort(self.bank.frame_index[older])]  # oldest first: the recency term favours later
        picked = older[self.recall.pick(pose, self.bank.poses[older], m)]
        count = len(picked)
        recalled, poses = self.bank.latents[picked], self.bank.poses[picked]
        if self.model.cfg.reproject_memory and count:
            recalled, drawn = reproject_drawn(recalled, self._depth_of(picked), poses, pose)
            self._drawn[:count] = drawn[:, 0]
        self._memory[:count] = recalled
        self._memory_poses[:count] = poses
        self._recalled[:count] = self.bank.frame_index[picked]

    @torch.no_grad()
    def step(self, action: torch.Tensor) -> StepResult:
        """One tick: the (7,) Doom action -> the next uint8 RGB frame (64, 80, 3) on the device."""
        values = torch.from_numpy(actions.validate(action.detach().cpu().numpy()))
        self.last_action = values
        cfg = self.model.cfg
        with self.timer.stage("pose"):
            self._pose_before = self.motion.pose
            pose = self.motion.step(values.to(self.device))
        with self.timer.stage("memory"):
            self._recall(pose)
            valid = self._recalled >= 0
            features = memory_pose_features(pose, self._memory_poses, valid, cfg.pose_scale)[None]
            newest = None
            if cfg.blend_newest:  # the newest stored frame, its pose and its depth (made when it was stored)
                slot = slice(self._last_slot, self._last_slot + 1)
                newest = newest_view(self.bank.latents[slot], self._slot_depth[slot], self.bank.poses[slot],
                                     pose[None], cfg.pose_scale)
        with self.timer.stage("sample"):
            self._actions.advance()
            self._actions.set_newest(values.to(self.device)[None])
            context = self._frames.window(cfg.context).reshape(1, 3 * cfg.context, *cfg.frame_size)
            frame = self.sampler.sample(context, self._memory.reshape(1, -1, *cfg.frame_size),
                                        self._actions.window(cfg.context), features, self._drawn[None], newest)
        with self.timer.stage("store"):
            self._frames.advance()
            self._frames.set_newest(frame)
            self._last_slot = self.bank.insert(frame[0], pose, values.to(self.device), self._count)
            self._see(dreamed=True)
            self._count += 1
            image = to_uint8(frame[0])
        return self.result(image)

    @torch.no_grad()
    def start_from(self, frames: torch.Tensor, actions_: torch.Tensor, poses: torch.Tensor) -> None:
        """The state after real frames: all of them in the memory bank, the last ones as context, the last pose."""
        if len(frames) == 0:
            raise ConfigError("start_from needs at least one frame")
        if tuple(frames.shape[1:]) != (*self.model.cfg.frame_size, 3):
            raise ConfigError(f"world '{self.world}' makes {self.frame_size[0]}x{self.frame_size[1]} frames, the "
                              f"recorded ones are {frames.shape[1]}x{frames.shape[2]}")
        self._restart()
        self._continue(frames, actions_, poses)

    def _continue(self, frames: torch.Tensor, actions_: torch.Tensor, poses: torch.Tensor) -> None:
        n = self.model.cfg.context
        self.bank.clear()
        units = to_unit(frames.to(self.device))
        for k in range(len(frames)):
            self._last_slot = self.bank.insert(units[k], poses[k].to(self.device), actions_[k].to(self.device), k)
        if self.model.depth_net is not None:
            self._slot_has_depth.fill_(False)
            seen = list(range(max(0, len(frames) - WALL_FRAMES), len(frames) - 1))  # _see adds the newest's walls
            if seen:
                depth = self.model.depth_net.depth(units[seen].to(self.model.dtype)).float()
                for k, view in zip(seen, depth, strict=True):
                    self.motion.reset(poses[k])
                    self.motion.see(view)
        rows = [max(0, len(frames) - n + k) for k in range(n)]
        self._frames.fill(units[rows][None])
        # the actions that led into the context frames; the next step drops the oldest and appends its own
        self._actions.fill(action_window(actions_.to(self.device), len(frames) - n, n)[None])
        self._set_motion(poses[-len(frames):].to(self.device))
        self._see()
        self._count = len(frames)
        self._pose_before = self.motion.pose

    def _set_motion(self, poses: torch.Tensor) -> None:
        """The motion at the newest pose, its momentum from the last two (per tic, after friction)."""
        self.motion.reset(poses[-1])
        if len(poses) >= 2:
            moved = torch.stack([poses[-1, 0] - poses[-2, 0], poses[-1, 2] - poses[-2, 2]])
            self.motion.momentum = moved / self.motion.frame_skip * FRICTION

    @torch.no_grad()
    def force(self, frame: torch.Tensor, pose: torch.Tensor) -> None:
        """Teacher forcing: the real frame and pose replace what the last tick made, in context and memory."""
        unit = to_unit(frame.to(self.device))
        self._frames.set_newest(unit[None])
        self.bank.latents[self._last_slot] = unit
        self.bank.poses[self._last_slot] = pose.to(self.device)
        # the momentum of the real move into this frame: from the pose the last tick started at, not the one it made
        self._set_motion(torch.stack([self._pose_before, pose.to(self.device)]))
        self._see(replace_newest=True)

    def tick_extras(self) -> dict[str, torch.Tensor]:
        """`retrieved_frames`: the frame numbers the tick recalled (-1: an empty slot)."""
        return {"retrieved_frames": self._recalled}

    def hud_items(self) -> list[str]:
        if not self.memory["enabled"]:
            return [f"memory off · {len(self.bank)} frames stored"]
        recalled = [n for n in self._recalled.tolist() if n >= 0]
        return [f"memory {len(self.bank)}/{self.bank.capacity} frames",
                "recalled " + (", ".join(str(n) for n in recalled) if recalled else "-")]

    def hud_images(self) -> list[torch.Tensor]:
        """The recalled frames as the model sees them (reprojected, with `reproject_memory`), uint8 (H, W, 3), for
        the HUD's thumbnails."""
        return [to_uint8(self._memory[k]) for k, n in enumerate(self._recalled.tolist()) if n >= 0]

    def settings_metadata(self) -> dict:
        return {"memory": self.memory, "spawn": self.spawn_info, "network": self.model.config_dict(),
                "context_sigma": float(self.sampler.sigma_cond[0]), "memory_guidance": self.sampler.memory_guidance}


def spawn(cfg: DictConfig, seed: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The real game's frame and pose the dream starts from (`spawn:` names the game's world and start)."""
    section = OmegaConf.to_container(cfg.get("spawn") or OmegaConf.create({}), resolve=True)
    game = load_world_config(str(section.get("game", "doom-game")))
    offset = int(section.get("start_offset", 0))
    spawn_seed = int(section.get("seed", seed))
    frame, pose = spawn_frame(game, spawn_seed, offset)
    info = {"game": str(game.name), "seed": spawn_seed, "start_offset": offset}
    return torch.from_numpy(frame), torch.from_numpy(np.asarray(pose, dtype=np.float32)), info


def open_world(cfg: DictConfig, networks: dict, options: SessionOptions) -> DoomDreamSession:
    """A dream at the real game's spawn frame, or after frames 0..K of a recording (`--prompt rec.npz`, with
    K = `--action-offset`: all of them go into the memory, the last ones are the context)."""
    if options.prompt is not None and options.prompt.suffix.lower() != ".npz":
        raise ConfigError(f"world '{cfg.name}': --prompt takes a recording (.npz) of the real game, "
                          f"got {options.prompt}")
    if options.prompt is None:
        frame, pose, info = spawn(cfg, options.seed)
        return DoomDreamSession(cfg, networks["world_model"], frame, pose, steps=options.steps, seed=options.seed,
                                checkpoint_files=options.checkpoint_files, spawn_info=info)
    data = read_recording(options.prompt)
    last = options.prompt_offset
    if not 0 <= last < len(data["frames"]):
        raise ConfigError(f"--prompt {options.prompt} has {len(data['frames'])} frames; --action-offset {last} "
                          "must name one of them")
    frames, actions_, poses = (torch.from_numpy(data[key][:last + 1]) for key in ("frames", "actions", "poses"))
    if not torch.isfinite(poses).all() or actions_.shape[1] != actions.NUM_ACTIONS:
        raise ConfigError(f"--prompt {options.prompt}: needs a Doom recording with poses and {actions.NUM_ACTIONS}-"
                          "column actions")
    session = DoomDreamSession(cfg, networks["world_model"], frames[-1], poses[-1], steps=options.steps,
                               seed=options.seed, checkpoint_files=options.checkpoint_files,
                               spawn_info={"prompt": str(options.prompt), "frame": last})
    session.open_on(frames, actions_, poses)
    return session
