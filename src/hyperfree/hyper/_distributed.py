"""Data parallelism for towers: the HyperModule all-reduces its own gradients.

``DistributedDataParallel`` cannot wrap a HyperModule: DDP averages gradients from hooks that
fire when ``backward()`` accumulates ``.grad``, whereas a tower takes ``torch.autograd.grad``
of live copies of the weights. The HyperModule therefore does what DDP would, itself:

* at construction, every parameter and buffer is broadcast from the group's first rank;
* before every forward pass with gradients enabled, the buffers (BatchNorm statistics) are
  broadcast from that rank, as DDP's default ``broadcast_buffers=True`` does;
* each step, the loss, the weight gradients and the hypergradients are averaged over ranks in
  **one** ``all_reduce`` of one flat buffer.

Every hypergradient is linear in ``∂L/∂w`` and its other factors (weights, hyperparameters,
stored last update) are identical on all ranks, so the average of the ranks' hypergradients is
the hypergradient of the averaged loss: all ranks keep identical weights and hyperparameters,
equal to one process on the global batch (tested with two gloo processes).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.distributed as torch_dist
from torch import Tensor, nn

__all__ = ["resolve_group", "broadcast_", "module_state", "all_reduce_mean"]


def resolve_group(data_parallel: Any) -> Any:
    """The process group a HyperModule averages over, or ``None`` for none.

    ``None`` (default): the default group if ``torch.distributed`` is initialised with more
    than one rank; ``True``: the default group (required); ``False``: never; or a group.
    """
    ready = torch_dist.is_available() and torch_dist.is_initialized()
    if data_parallel is False:
        return None
    if data_parallel is None or data_parallel is True:
        if not ready:
            if data_parallel is None:
                return None
            raise ValueError("HyperModule(data_parallel=True) needs an initialised process "
                             "group: call torch.distributed.init_process_group first (torchrun)")
        group = torch_dist.group.WORLD
    elif ready and isinstance(data_parallel, torch_dist.ProcessGroup):
        group = data_parallel
    else:
        raise ValueError(f"data_parallel must be None, True, False or a torch.distributed "
                         f"ProcessGroup, got {data_parallel!r}")
    return group if torch_dist.get_world_size(group) > 1 else None


def broadcast_(tensors: Sequence[Tensor], group: Any) -> None:
    """Overwrite ``tensors`` in place with the group's first rank's values (one broadcast per
    dtype and device)."""
    src = torch_dist.get_global_rank(group, 0)
    by_kind: dict[tuple[torch.dtype, torch.device], list[Tensor]] = {}
    for t in tensors:
        by_kind.setdefault((t.dtype, t.device), []).append(t)
    with torch.no_grad():
        for group_tensors in by_kind.values():
            flat = torch.cat([t.reshape(-1) for t in group_tensors])
            torch_dist.broadcast(flat, src, group=group)
            for t, piece in zip(group_tensors, flat.split([t.numel() for t in group_tensors])):
                t.copy_(piece.view_as(t))


def module_state(model: nn.Module) -> list[Tensor]:
    """Every parameter and buffer of ``model`` (shared ones once), detached."""
    return [p.detach() for p in model.parameters()] + list(model.buffers())


def all_reduce_mean(tensors: Sequence[Tensor | None], group: Any, dtype: torch.dtype
                    ) -> list[Tensor | None]:
    """The mean over ranks of each tensor (``None`` stays ``None``), through one flat ``dtype``
    buffer and one ``all_reduce``. Results are views of that buffer where the dtype allows."""
    present = [t for t in tensors if t is not None]
    flat = torch.cat([t.detach().reshape(-1).to(dtype) for t in present])
    torch_dist.all_reduce(flat, group=group)
    flat.div_(torch_dist.get_world_size(group))
    pieces = iter(flat.split([t.numel() for t in present]))
    return [None if t is None else next(pieces).view(t.shape).to(t.dtype) for t in tensors]
