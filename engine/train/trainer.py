"""The training loop shared by every family: AdamW with warm-up + cosine, gradient clipping, EMA,
bf16 autocast on GPU, DDP/FSDP under torchrun, checkpoints with exact resume, logs and the world yaml.

Exact resume rests on three things: the batches of step s are a function of (seed, s) (batches.py), the
random draws of step s are a function of (seed, s, sample position) (rng.py), and a checkpoint holds the
full optimizer and EMA state. The learning rate is a pure function of the step.
"""

from __future__ import annotations

import json
import math
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from engine.errors import ConfigError, EngineError
from engine.train.batches import EpochDataset, StepBatches
from engine.train.checkpoint import EMA_FILE, latest_checkpoint, load_checkpoint, save_checkpoint
from engine.train.distributed import (
    DistContext,
    init_distributed,
    mean_over_processes,
    shutdown,
    unwrap,
    wrap_model,
)
from engine.train.ema import EMA
from engine.train.logs import RunLog
from engine.train.recipes import Recipe, build_recipe
from engine.train.rng import BatchRandom
from engine.train.schedule import warmup_cosine_factor

CHECKPOINTS_DIR = "checkpoints"


@dataclass
class TrainResult:
    run_dir: Path
    start_step: int
    steps: int
    losses: list[float]  # this process's view of the global mean loss, steps start_step+1 .. steps
    checkpoint: Path
    world: Path | None  # what the recipe's write_world returned (main process): a world yaml, or its output file


def make_optimizer(model: nn.Module, optim: DictConfig) -> torch.optim.AdamW:
    """AdamW; matrices and convolution kernels decay, biases, norms and other vectors do not."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": float(optim.weight_decay)},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=float(optim.lr), betas=tuple(optim.betas), eps=float(optim.eps))


def autocast_context(cfg: DictConfig, device: torch.device):
    """bf16 autocast on CUDA when train.precision is bf16, and on the CPU too with train.cpu_autocast; else float32."""
    precision = str(cfg.train.precision)
    if precision not in ("bf16", "fp32"):
        raise ConfigError(f"train.precision '{precision}' is not one of bf16, fp32")
    if precision == "bf16" and (device.type == "cuda" or (device.type == "cpu" and cfg.train.cpu_autocast)):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def train(cfg: DictConfig) -> TrainResult:
    """Run (or resume) the training described by `cfg`; every torchrun process calls this."""
    ctx = init_distributed(str(cfg.train.device))
    try:
        return Trainer(cfg, ctx).run()
    finally:
        shutdown(ctx)


class Trainer:
    """One process's share of a run: built (and resumed) by the constructor, driven by `run`."""

    def __init__(self, cfg: DictConfig, ctx: DistContext) -> None:
        self.cfg, self.ctx = cfg, ctx
        self.run_dir = Path(str(cfg.output_dir))
        self.total = int(cfg.train.steps)
        torch.manual_seed(int(cfg.seed))
        self.recipe: Recipe = build_recipe(cfg, ctx.device)
        self.model = wrap_model(self.recipe.model.to(ctx.device).train(), str(cfg.distributed.strategy), ctx)
        self.ema = EMA(unwrap(self.model), float(cfg.train.ema_decay))
        self.optimizer = make_optimizer(self.model, cfg.optim)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.start, self.checkpoint = 0, latest_checkpoint(self.run_dir / CHECKPOINTS_DIR)
        if self.checkpoint is not None:
            if not cfg.train.resume:
                raise ConfigError(f"{self.run_dir} already holds a checkpoint ({self.checkpoint.name}): set "
                                  "train.resume=true to continue it, or choose another output_dir")
            self.start = int(load_checkpoint(self.checkpoint, self.model, self.ema, self.optimizer)["step"])
        self.log: RunLog | None = None
        self.world: Path | None = None
        if ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(cfg, self.run_dir / "config.yaml")
            self.log = RunLog(self.run_dir, self.start)

    def run(self) -> TrainResult:
        cfg, ctx = self.cfg, self.ctx
        sampler = StepBatches(len(self.recipe.dataset), int(cfg.train.batch_size), int(cfg.seed), self.start,
                              self.total, ctx.rank, ctx.world_size)
        loader = DataLoader(EpochDataset(self.recipe.dataset), batch_sampler=sampler,
                            num_workers=int(cfg.train.num_workers), pin_memory=ctx.device.type == "cuda")
        bar = tqdm(total=self.total, initial=self.start, desc=str(cfg.name), unit="step", dynamic_ncols=True,
                   disable=not (ctx.is_main and cfg.train.progress))
        losses: list[float] = []
        every = int(cfg.train.checkpoint_every)
        for step, batch in zip(range(self.start, self.total), loader, strict=True):
            metrics = self.step(step, batch, sampler.positions())
            losses.append(metrics["loss"])
            done = step + 1
            if self.log is not None:
                self.log.log(done, metrics)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{metrics['lr']:.2e}")
            bar.update(1)
            if done % every == 0 or done == self.total:
                self.save(done)
        bar.close()
        if self.log is not None:
            self.log.close()
        if self.checkpoint is None:
            raise ConfigError(f"train.steps {self.total} leaves nothing to train")
        if self.world is None and self.log is not None:  # resumed a finished run: nothing was saved
            self.world = self.write_world()
        return TrainResult(self.run_dir, self.start, self.total, losses, self.checkpoint, self.world)

    def step(self, step: int, batch: dict[str, torch.Tensor], positions: list[int]) -> dict[str, float]:
        """One optimizer step on this process's part of the global batch; returns the metrics averaged over
        processes."""
        cfg, ctx, optim = self.cfg, self.ctx, self.cfg.optim
        batch = to_device(batch, ctx.device)
        rng = BatchRandom(int(cfg.seed), step, positions, ctx.device)
        torch.manual_seed(rng.process_seed(ctx.rank))  # whatever else draws from torch's generator (dropout)
        with torch.no_grad():
            batch = self.recipe.prepare(batch, rng)
        lr = float(optim.lr) * warmup_cosine_factor(step, int(optim.warmup_steps), self.total,
                                                    float(optim.min_lr_ratio))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with autocast_context(cfg, ctx.device):
            loss, logs = self.model(batch, rng)
        loss.backward()
        clip = float(optim.grad_clip)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, clip if clip > 0 else float("inf"))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(unwrap(self.model))

        if hasattr(grad_norm, "full_tensor"):  # FSDP
            grad_norm = grad_norm.full_tensor()
        values = torch.stack([loss.detach().float(), *(v.detach().float() for v in logs.values())])
        metrics = dict(zip(["loss", *logs], mean_over_processes(values, ctx).tolist(), strict=True))
        metrics |= {"grad_norm": float(grad_norm), "lr": lr}
        if not math.isfinite(metrics["loss"]):
            raise EngineError(f"training diverged: the loss is {metrics['loss']} at step {step + 1}")
        return metrics

    def save(self, done: int) -> None:
        """Checkpoint after `done` steps, then (main process) the world yaml for it and the loss plot."""
        self.checkpoint = save_checkpoint(self.run_dir / CHECKPOINTS_DIR, done, self.model, self.ema, self.optimizer,
                                          self.ctx, int(self.cfg.train.keep_last))
        if self.log is not None:
            self.world = self.write_world()
            self.log.plot()

    def write_world(self) -> Path:
        """The recipe's play-side output for the latest checkpoint's EMA weights."""
        return self.recipe.write_world(self.run_dir, self.checkpoint.relative_to(self.run_dir) / EMA_FILE)


def summary_line(result: TrainResult) -> str:
    """The final JSON line of `python -m engine.train`."""
    return json.dumps({"run_dir": str(result.run_dir), "start_step": result.start_step, "steps": result.steps,
                       "first_loss": result.losses[0] if result.losses else None,
                       "last_loss": result.losses[-1] if result.losses else None,
                       "checkpoint": str(result.checkpoint), "world": str(result.world) if result.world else None})
