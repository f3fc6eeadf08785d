"""torch.distributed plumbing for `torchrun`: process group, model wrapping (DDP or FSDP), reductions.

One process is a world of one: no process group, the model is not wrapped, reductions are identities.
The backend is nccl on CUDA and gloo on CPU.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from engine.backends.device import resolve_device
from engine.errors import ConfigError

STRATEGIES = ("ddp", "fsdp")


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistContext:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK, pick this process's device, open the process group."""
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank if dev.index is None else dev.index)
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend, device_id=dev if dev.type == "cuda" else None)
    return DistContext(rank, world_size, local_rank, dev)


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, strategy: str, ctx: DistContext) -> nn.Module:
    """DDP, or FSDP2 (`fully_shard`) on the whole training module.

    FSDP keeps the module object and its parameter names (parameters, gradients and optimizer state are
    sharded; the parameters are gathered for the forward). One unit, not one per block: the play-side
    networks call their blocks through methods other than `forward` (e.g. Oasis' spatial/temporal
    sub-blocks), which per-block units would not see. Frozen parameters (Oasis' rotary frequencies, one
    tensor shared by every block) stay unsharded. DDP wraps the module.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"distributed.strategy '{strategy}' is not one of {', '.join(STRATEGIES)}")
    if not ctx.enabled:
        return model
    if strategy == "ddp":
        return DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError:
        fully_shard = None
    if fully_shard is None or "ignored_params" not in inspect.signature(fully_shard).parameters:
        raise ConfigError(f"distributed.strategy fsdp needs torch >= 2.7 (fully_shard with ignored_params), "
                          f"this is {torch.__version__}: use distributed.strategy=ddp")
    fully_shard(model, ignored_params={p for p in model.parameters() if not p.requires_grad})
    return model


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def mean_over_processes(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Element-wise mean of a tensor over all processes (the tensor itself in a world of one)."""
    if not ctx.enabled:
        return values
    total = values.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / ctx.world_size


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()
