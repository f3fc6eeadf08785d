"""The Atari world: DIAMOND's Atari-100k world models (eloialonso/diamond main branch, `WorldModelEnv`).

One checkpoint holds three networks under the prefixes `denoiser.`, `rew_end_model.` and `actor_critic.`.
A tick does what `WorldModelEnv.step` does: the action goes into the newest slot of the action buffer, the EDM
sampler dreams the next 64x64 frame from the last T frames and actions, the reward/end model reads
(frame, action, next frame) through its LSTM and a reward in {-1, 0, +1} and an end flag are sampled from its
logits, then the buffers move on by one. The T conditioning frames and actions live in a ring on the device
that holds every slot twice, so the window the sampler reads is always one contiguous slice, oldest first,
and a tick writes one frame instead of rolling the buffers.

The session starts from frames of the real emulator (`ale_env`: DIAMOND's preprocessing), like the play
script, which starts the world model from segments the agent collected in the real game; the reward/end
model is burnt in on that segment. The `cached` sampler calls the denoiser through `PlayDenoiser` (the
preconditioning and conditioning work that repeats every tick done once, channels-last convolutions);
`reference` calls `Denoiser.denoise` through `sample_reference`, as the original does. The cached tick runs
the denoiser, the reward/end model and the actor-critic through the session's backend (`--backend`). With `options.extra["agent"]` the actor-critic picks every action from
the newest frame (LSTM state from zero at reset), as in the play script's policy mode. Random outcomes
(reward, end, policy) use their own seeded generators, so switching the agent on leaves the world's
noise stream as it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from engine.actions.atari import action_index, env_id, minimal_action_names, one_hot
from engine.actions.atari import num_actions as game_num_actions
from engine.backends.base import Backend
from engine.checkpoints.resolve import resolve_checkpoint_files
from engine.core.noise import ResettableNoise, SeededNoise
from engine.core.ring import Ring
from engine.core.session import EpisodeSettings, SessionBase, SessionOptions, StepResult, session_backend
from engine.errors import CheckpointError, ConfigError
from engine.families.diamond.agent import (
    ActorCritic,
    ActorCriticConfig,
    LSTMState,
    RewEndModel,
    RewEndModelConfig,
    policy_action,
)
from engine.families.diamond.ale_env import (
    AtariEnv,
    AtariEnvSettings,
    Policy,
    Segment,
    collect_segment,
    to_model_frames,
)
from engine.families.diamond.denoiser import Denoiser, DenoiserConfig
from engine.families.diamond.edm import EdmSamplerConfig, sample_reference
from engine.families.diamond.play import play_sampler
from engine.families.diamond.units import ActorCriticStep, RewEndStep, actor_critic_example, rew_end_example

SAMPLERS = ("cached", "reference")
SPAWN_POLICIES = ("agent", "random", "noop")
# Separate random streams per purpose, derived from the session seed.
OUTCOME_STREAM, POLICY_STREAM, SPAWN_STREAM = 1, 2, 3


def denoiser(game: str, sigma_data: float, sigma_offset_noise: float, inner_model: Mapping[str, Any],
             num_actions: int | None = None) -> Denoiser:
    """The denoiser of `config/agent/default.yaml` for `game` (num_actions: its minimal action set's size)."""
    actions = num_actions or game_num_actions(game)
    return Denoiser(DenoiserConfig.from_dict({"inner_model": {**inner_model, "num_actions": actions},
                                              "sigma_data": sigma_data, "sigma_offset_noise": sigma_offset_noise}))


def rew_end_model(game: str, lstm_dim: int, img_channels: int, img_size: int, cond_channels: int,
                  depths: list[int], channels: list[int], attn_depths: list[int],
                  num_actions: int | None = None) -> RewEndModel:
    return RewEndModel(RewEndModelConfig.from_dict({
        "lstm_dim": lstm_dim, "img_channels": img_channels, "img_size": img_size, "cond_channels": cond_channels,
        "depths": depths, "channels": channels, "attn_depths": attn_depths,
        "num_actions": num_actions or game_num_actions(game)}))


def actor_critic(game: str, lstm_dim: int, img_channels: int, img_size: int, channels: list[int], down: list[int],
                 num_actions: int | None = None) -> ActorCritic:
    return ActorCritic(ActorCriticConfig.from_dict({
        "lstm_dim": lstm_dim, "img_channels": img_channels, "img_size": img_size, "channels": channels,
        "down": down, "num_actions": num_actions or len(minimal_action_names(game))}))


NETWORKS = {"denoiser": denoiser, "rew_end_model": rew_end_model, "actor_critic": actor_critic}


def sampler_config(cfg: DictConfig, steps: int | None = None) -> EdmSamplerConfig:
    settings = OmegaConf.to_container(cfg.sampler, resolve=True)
    if steps:
        settings["num_steps_denoising"] = int(steps)
    try:
        return EdmSamplerConfig.from_dict(settings)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"world '{cfg.name}': bad sampler settings {settings}: {exc}") from None


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """[-1, 1] frames (..., 3, H, W) -> uint8 (..., H, W, 3): the exact quantisation level, rounded.

    The reference's display truncates instead (`add(1).div(2).mul(255).byte()`), which shows 63 of the 256
    levels one lower than the denoiser chose; rounding inverts `u8 / 255 * 2 - 1` exactly."""
    u8 = frames.float().add(1).div(2).mul(255).round().clamp(0, 255).to(torch.uint8)
    return u8.movedim(-3, -1)


class AtariSession(SessionBase):
    """One player in a DIAMOND Atari world; `reset` goes back to the spawn segment."""

    family = "atari"
    episodic = True

    def __init__(self, cfg: DictConfig, networks: Mapping[str, torch.nn.Module], spawn_frames: torch.Tensor,
                 spawn_actions: torch.Tensor, *, sampler: str = "cached", steps: int | None = None, seed: int = 0,
                 agent: bool = False, noise: ResettableNoise | None = None,
                 checkpoint_files: dict[str, Path] | None = None, spawn_info: dict | None = None,
                 backend: Backend | None = None) -> None:
        if sampler not in SAMPLERS:
            raise ConfigError(f"sampler '{sampler}' is not one of {', '.join(SAMPLERS)}")
        self.denoiser: Denoiser = networks["denoiser"]
        self.rew_end_model: RewEndModel = networks["rew_end_model"]
        self.actor_critic: ActorCritic = networks["actor_critic"]
        inner = self.denoiser.cfg.inner_model
        self.context = inner.num_steps_conditioning
        if spawn_frames.ndim != 4 or spawn_frames.shape[0] < self.context or spawn_frames.shape[1] != 3:
            raise ConfigError(f"world '{cfg.name}': spawn frames {tuple(spawn_frames.shape)} must be "
                              f"(L >= {self.context}, 3, H, W)")
        if spawn_actions.shape != spawn_frames.shape[:1]:
            raise ConfigError(f"world '{cfg.name}': {len(spawn_actions)} spawn actions for "
                              f"{len(spawn_frames)} spawn frames")
        self.settings = sampler_config(cfg, steps)
        super().__init__(cfg, device=self.denoiser.device, dtype=self.denoiser.dtype, action_dim=inner.num_actions,
                         frame_size=tuple(spawn_frames.shape[-2:]), steps=self.settings.num_steps_denoising,
                         seed=seed, sampler=sampler, checkpoint_files=checkpoint_files, backend=backend,
                         default_fps=15)
        self.game = str(cfg.game)
        self.action_names = _action_names(self.game, self.action_dim)
        sizes = {self.rew_end_model.cfg.img_size, self.actor_critic.cfg.img_size}
        if sizes != set(self.frame_size):
            raise ConfigError(f"world '{self.world}': frames are {self.frame_size[0]}x{self.frame_size[1]} but the "
                              f"reward/end model and actor-critic take img_size {sorted(sizes)}: set env.size to match")
        self.agent = agent
        self.episode = EpisodeSettings.from_config(cfg)
        self.spawn_info = spawn_info or {}
        self.noise = noise or SeededNoise(seed, self.device)
        self._outcome_rng = torch.Generator(device=self.device)
        self._policy_rng = torch.Generator(device=self.device)
        # The cached tick runs its network calls through the backend; the reference tick is the plain algorithm.
        self._fast_sampler, self._play = play_sampler(self.denoiser, self.settings, self.device, self.backend,
                                                      "denoiser", self.frame_size)
        self._rew_end = self.backend.compile_step(RewEndStep(self.rew_end_model), rew_end_example(self.rew_end_model),
                                                  "rew_end_model")
        self._policy = (self.backend.compile_step(ActorCriticStep(self.actor_critic),
                                                  actor_critic_example(self.actor_critic), "actor_critic")
                        if agent else None)
        self._spawn_frames = spawn_frames.to(self.device, torch.float32)
        self._spawn_actions = spawn_actions.to(self.device, torch.int64)
        t, (h, w) = self.context, self.frame_size
        self._obs_ring = Ring((3, h, w), t, self.device)
        self._act_ring = Ring((), t, self.device, torch.int64)
        self.reset()

    # -- state -------------------------------------------------------------------------------------------

    @torch.no_grad()
    def reset(self) -> None:
        t = self.context
        self.noise.reset()
        self._outcome_rng.manual_seed(stream_seed(self.seed, OUTCOME_STREAM))
        self._policy_rng.manual_seed(stream_seed(self.seed, POLICY_STREAM))
        frames, actions = self._spawn_frames, self._spawn_actions
        self._obs_ring.fill(frames[-t:][None])
        self._act_ring.fill(actions[-t:][None])
        self.rew_end_state = self._burn_in(frames, actions)
        self.agent_state = list(self.actor_critic.initial_state(1))
        self.last_action = torch.zeros(self.action_dim, device=self.device)
        self.reward = torch.zeros(1, dtype=torch.int64, device=self.device)
        self.end = torch.zeros(1, dtype=torch.int64, device=self.device)
        self.end_probability = torch.zeros(1, device=self.device)
        self.episode_return = torch.zeros(1, dtype=torch.int64, device=self.device)
        self.value: torch.Tensor | None = None
        self._frame_index = len(frames)
        self.episode_ticks = 0

    def _burn_in(self, frames: torch.Tensor, actions: torch.Tensor) -> LSTMState:
        """The reward/end model's LSTM state after the spawn segment: predict_rew_end(obs[:-1], act[:-1], obs[1:])."""
        lstm_dim = self.rew_end_model.cfg.lstm_dim
        if len(frames) < 2:
            zeros = torch.zeros(1, 1, lstm_dim, device=self.device, dtype=self.dtype)
            return zeros, zeros.clone()
        obs = frames[None].to(self.dtype)
        *_, state = self.rew_end_model.predict_rew_end(obs[:, :-1], actions[None, :-1], obs[:, 1:])
        return state

    @property
    def frame_index(self) -> int:
        return self._frame_index

    def window(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Conditioning frames (1, T, 3, H, W) and actions (1, T), oldest first: views into the ring."""
        return self._obs_ring.window(self.context), self._act_ring.window(self.context)

    def newest_frame(self) -> torch.Tensor:
        """(1, 3, H, W) float frame on screen now."""
        return self._obs_ring.window(1)[:, 0]

    def prompt_frames(self) -> torch.Tensor:
        return to_uint8(self._spawn_frames)

    # -- tick --------------------------------------------------------------------------------------------

    def _denoise(self, x: torch.Tensor, sigma: torch.Tensor, obs: torch.Tensor, act: torch.Tensor | None,
                 sigma_cond: torch.Tensor | None) -> torch.Tensor:
        dt = self.dtype
        return self.denoiser.denoise(x.to(dt), sigma.to(dt), obs.to(dt), act, sigma_cond).float()

    def _sample(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        if self.sampler_kind == "reference":
            return sample_reference(self._denoise, obs, act, self.settings, self.noise)[0]
        self._play.begin(act)
        return self._fast_sampler.sample(obs, act, self.noise)[0]

    def _choose_action(self, action: torch.Tensor) -> torch.Tensor:
        """(1,) int64 index: the actor-critic's in agent mode, else the input's."""
        if not self.agent:
            if action.shape != (self.action_dim,):
                raise ConfigError(f"world '{self.world}' ({self.game}) takes one-hot actions of size "
                                  f"{self.action_dim}, got shape {tuple(action.shape)}")
            return action_index(action.to(self.device))
        logits, value, *self.agent_state = self._policy(self.newest_frame().to(self.dtype), *self.agent_state)
        self.value = value.float()
        return policy_action(logits.float(), self._policy_rng)

    @torch.no_grad()
    def step(self, action: torch.Tensor) -> StepResult:
        """One tick: action (A,) one-hot (ignored in agent mode) -> uint8 RGB frame (H, W, 3) on the device."""
        with self.timer.stage("policy"):
            index = self._choose_action(action)
        self._act_ring.set_newest(index)
        obs, act = self.window()
        with self.timer.stage("sample"):
            next_obs = self._sample(obs, act)
        with self.timer.stage("reward"):
            self._predict_outcome(obs[:, -1:], act[:, -1:], next_obs)
        self._obs_ring.advance()
        self._act_ring.advance()
        self._obs_ring.set_newest(next_obs)
        self.last_action = one_hot(index, self.action_dim)
        self._frame_index += 1
        self.episode_ticks += 1
        with self.timer.stage("decode"):
            frame = to_uint8(next_obs[0])
        return self.result(frame)

    def _predict_outcome(self, obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> None:
        """Reward in {-1, 0, 1} and end flag sampled from the reward/end model, whose LSTM state moves on."""
        dt = self.dtype
        logits_rew, logits_end, *self.rew_end_state = self._rew_end(obs.to(dt), act, next_obs[:, None].to(dt),
                                                                    *self.rew_end_state)
        self.reward = policy_action(logits_rew[:, -1].float(), self._outcome_rng) - 1
        self.end = policy_action(logits_end[:, -1].float(), self._outcome_rng)
        self.end_probability = logits_end[:, -1].float().softmax(-1)[:, 1]
        self.episode_return = self.episode_return + self.reward

    def episode_over(self) -> bool:
        """The predicted end of the episode (with `episode.reset_on_end`) or its horizon reached; reads the end
        flag from the device, so it is asked after the tick."""
        return self.episode.over(self.episode_ticks, bool(self.end))

    # -- reporting ---------------------------------------------------------------------------------------

    def hud_items(self) -> list[str]:
        action = self.action_names[int(self.last_action.argmax())] if self.last_action.any() else "noop"
        items = [f"{self.game} · {'agent' if self.agent else 'you'}: {action}",
                 f"reward {int(self.reward):+d}  return {int(self.episode_return):+d}",
                 f"end {'yes' if int(self.end) else 'no'} (p {float(self.end_probability):.2f})"]
        if self.agent and self.value is not None:
            items.append(f"value {float(self.value):.2f}")
        return items + self.episode.hud_items(self.episode_ticks)

    def settings_metadata(self) -> dict:
        s = self.settings
        return {"game": self.game, "sigma_min": s.sigma_min, "sigma_max": s.sigma_max, "rho": s.rho,
                "order": s.order, "s_churn": s.s_churn, "num_steps_conditioning": self.context,
                "action_names": list(self.action_names), "agent": self.agent, "spawn": self.spawn_info,
                "episode": self.episode.__dict__}


def stream_seed(seed: int, stream: int) -> int:
    return (seed * 1_000_003 + stream) % 2**63


def _action_names(game: str, num_actions: int) -> tuple[str, ...]:
    names = minimal_action_names(game)
    if len(names) != num_actions:
        raise ConfigError(f"game '{game}' has {len(names)} actions ({', '.join(names)}) but the networks were built "
                          f"for {num_actions}: set game to the checkpoint's game or networks.*.num_actions to "
                          f"{len(names)}")
    return names


# -- spawn ---------------------------------------------------------------------------------------------


def env_settings(cfg: DictConfig) -> AtariEnvSettings:
    env = cfg.get("env") or {}
    return AtariEnvSettings(game=str(cfg.game), size=int(env.get("size", 64)),
                            frame_skip=int(env.get("frame_skip", 4)), noop_max=int(env.get("noop_max", 30)))


def spawn_policy(kind: str, networks: Mapping[str, torch.nn.Module], num_actions: int, seed: int) -> Policy:
    """uint8 frame -> action index for collecting the spawn segment in the real game."""
    if kind == "noop":
        return lambda obs: 0
    if kind == "random":
        rng = np.random.default_rng(stream_seed(seed, SPAWN_STREAM))
        return lambda obs: int(rng.integers(num_actions))
    if kind != "agent":
        raise ConfigError(f"spawn.policy '{kind}' is not one of {', '.join(SPAWN_POLICIES)}")
    model: ActorCritic = networks["actor_critic"]
    generator = torch.Generator(device=model.device).manual_seed(stream_seed(seed, SPAWN_STREAM))
    state: list[LSTMState | None] = [None]

    @torch.no_grad()
    def act(obs: np.ndarray) -> int:
        frame = to_model_frames(obs)[None].to(model.device, model.dtype)
        logits, _, state[0] = model.predict_act_value(frame, state[0])
        return int(policy_action(logits.float(), generator))

    return act


def collect_spawn(cfg: DictConfig, networks: Mapping[str, torch.nn.Module], seed: int) -> tuple[Segment, dict]:
    """Frames and actions of the real game (DIAMOND's preprocessing) that the world model starts from."""
    spawn = cfg.get("spawn") or {}
    settings = env_settings(cfg)
    context = networks["denoiser"].cfg.inner_model.num_steps_conditioning
    length = int(spawn.get("frames") or context)
    kind, warmup = str(spawn.get("policy", "agent")), int(spawn.get("warmup_steps", 0))
    env = AtariEnv(settings)
    try:
        policy = spawn_policy(kind, networks, env.num_actions, seed)
        segment = collect_segment(env, length, policy, seed=seed, warmup_steps=warmup)
    finally:
        env.close()
    info = {"env": env_id(settings.game), "size": settings.size, "frame_skip": settings.frame_skip,
            "noop_max": settings.noop_max, "policy": kind, "warmup_steps": warmup, "frames": length, "seed": seed}
    return segment, info


# -- official configs ----------------------------------------------------------------------------------


def check_official_configs(cfg: DictConfig, allow_download: bool) -> None:
    """Compare the world's network sizes and frame size with the checkpoint's own config yamls
    (`checkpoints.configs`: agent and env yaml in the repo), when they can be had; strict loading has already
    checked every shape, this also covers sigma_data, sigma_offset_noise and the frame size."""
    configs = cfg.checkpoints.get("configs")
    if not configs:
        return
    checkpoints = cfg.checkpoints
    lookup = OmegaConf.create({"name": cfg.name, "source_dir": cfg.get("source_dir"), "checkpoints": {
        "repo": checkpoints.get("repo"), "revision": checkpoints.get("revision"), "files": configs}})
    try:
        files = resolve_checkpoint_files(lookup, allow_download=allow_download)
    except CheckpointError:
        return
    official = OmegaConf.create({"agent": OmegaConf.load(files["agent"]), "env": OmegaConf.load(files["env"])})
    for role in NETWORKS:
        ours = OmegaConf.to_container(cfg.networks[role], resolve=True)
        theirs = OmegaConf.to_container(official.agent[role], resolve=True)
        _compare(ours, theirs, f"networks.{role}", files["agent"])
    size = env_settings(cfg).size
    if size != int(official.env.train.size):
        raise ConfigError(f"world '{cfg.name}': env.size is {size} but {files['env']} has train.size "
                          f"{official.env.train.size}")


def _compare(ours: Mapping, theirs: Mapping, where: str, source: Path) -> None:
    for key, value in ours.items():
        if key in ("game", "num_actions") or key not in theirs:
            continue
        if isinstance(value, Mapping):
            _compare(value, theirs[key], f"{where}.{key}", source)
        elif value != theirs[key]:
            raise ConfigError(f"{where}.{key} is {value} but the checkpoint's config {source} has {theirs[key]}")


def open_world(cfg: DictConfig, networks: dict, options: SessionOptions) -> AtariSession:
    """A session on the world model of `cfg.game`, reset to a segment of the real game."""
    if options.prompt is not None:
        raise ConfigError(f"world '{cfg.name}' starts from the real game (spawn settings in its config), "
                          f"not from a prompt file: drop --prompt {options.prompt}")
    check_official_configs(cfg, options.allow_download)
    segment, info = collect_spawn(cfg, networks, options.seed)
    session = AtariSession(cfg, networks, to_model_frames(segment.frames), torch.from_numpy(segment.actions),
                           sampler=options.sampler, steps=options.steps, seed=options.seed,
                           agent=bool(options.extra.get("agent")), checkpoint_files=options.checkpoint_files,
                           spawn_info=info,
                           backend=session_backend(cfg, options, networks["denoiser"]))
    session.warm_up()
    return session
