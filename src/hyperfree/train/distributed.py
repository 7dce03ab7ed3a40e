"""Data-parallel training: the process-group context the loop receives.

The library never reads the environment: the CLI passes ``os.environ`` to :func:`dist_from_env`,
which reads torchrun's ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``. :func:`init_distributed` starts the process group (NCCL on CUDA, gloo on CPU)
and returns a :class:`DistContext`, which the loop uses to wrap the model in
``DistributedDataParallel``, shard the global batch (``TensorLoader`` rank/world_size) and
reduce metrics. A ``DistContext`` with ``world_size == 1`` is plain single-process training.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

import torch
import torch.distributed as torch_dist
from torch import Tensor

__all__ = ["DistContext", "SINGLE", "dist_from_env", "init_distributed", "close_distributed",
           "reduce_sum", "reduce_min", "reduce_max"]


@dataclasses.dataclass(frozen=True)
class DistContext:
    """This process's place in the group: ``rank`` of ``world_size``; ``local_rank`` on host."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistContext()


def dist_from_env(env: Mapping[str, str]) -> DistContext | None:
    """torchrun's variables from ``env`` as a (not yet initialised) context; None if absent."""
    if "WORLD_SIZE" not in env or "RANK" not in env:
        return None
    try:
        world, rank = int(env["WORLD_SIZE"]), int(env["RANK"])
        local = int(env.get("LOCAL_RANK", "0"))
    except ValueError:
        raise ValueError(f"WORLD_SIZE/RANK/LOCAL_RANK must be integers, got "
                         f"{env.get('WORLD_SIZE')!r}/{env.get('RANK')!r}/"
                         f"{env.get('LOCAL_RANK')!r}") from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} must lie in [0, WORLD_SIZE={world})")
    return DistContext(rank=rank, world_size=world, local_rank=local)


def init_distributed(ctx: DistContext, *, device_type: str, init_method: str,
                     timeout_s: float = 300.0) -> DistContext:
    """Start the process group for ``ctx`` (NCCL for cuda, gloo otherwise); no-op if single."""
    if not ctx.enabled:
        return ctx
    import datetime

    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(ctx.local_rank)
    torch_dist.init_process_group(backend, init_method=init_method, rank=ctx.rank,
                                  world_size=ctx.world_size,
                                  timeout=datetime.timedelta(seconds=timeout_s))
    return dataclasses.replace(ctx, backend=backend)


def close_distributed(ctx: DistContext) -> None:
    """Destroy the process group started by :func:`init_distributed`, if any."""
    if ctx.enabled and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def _reduce(t: Tensor, op: torch_dist.ReduceOp, ctx: DistContext) -> Tensor:
    if ctx.enabled:
        t = t.clone()
        torch_dist.all_reduce(t, op=op)
    return t


def reduce_sum(t: Tensor, ctx: DistContext) -> Tensor:
    """Sum of ``t`` over ranks (a copy; ``t`` itself if single-process)."""
    return _reduce(t, torch_dist.ReduceOp.SUM, ctx)


def reduce_min(t: Tensor, ctx: DistContext) -> Tensor:
    """Elementwise minimum of ``t`` over ranks."""
    return _reduce(t, torch_dist.ReduceOp.MIN, ctx)


def reduce_max(t: Tensor, ctx: DistContext) -> Tensor:
    """Elementwise maximum of ``t`` over ranks."""
    return _reduce(t, torch_dist.ReduceOp.MAX, ctx)
