"""FSDP2 mode of the training loop: ``hyperfree train --fsdp`` under ``torchrun``.

Instead of replicating the model and averaging gradients (DDP, the default), every parameter is
sharded along dim 0 over the ranks with ``torch.distributed.fsdp.fully_shard`` (FSDP2): each
child of every ``nn.Sequential``/``nn.ModuleList`` (the layers and blocks of the registered
models; the outermost ones: not the MLP inside a block) is its own FSDP unit, then the root. The optimiser is built on the sharded (DTensor)
parameters; AGD computes its global norms with one all-reduce per step
(:mod:`hyperfree.optim._distributed`). Checkpoints hold full tensors, so a run saved under
FSDP resumes on any number of ranks (and a DDP or single-process run's checkpoint resumes under
FSDP): :func:`full_state` gathers them on every rank before rank 0 writes,
:func:`load_state` shards them back.

The loop calls these six functions and nothing else of FSDP.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["shard", "reshard", "full_state", "load_state", "local_finite"]


def _dtensor() -> type:
    from torch.distributed.tensor import DTensor

    return DTensor


def shard(model: nn.Module, build_stepper: Callable[[], Any], enabled: bool) -> Any:
    """Shard ``model`` in place (after its weights are initialised, identically on every rank)
    and return the stepper ``build_stepper()`` builds on the sharded parameters."""
    if not enabled:
        raise ValueError("--fsdp shards the model over the processes of torchrun; start the "
                         "run with torchrun --nproc_per_node N (N >= 2), or drop --fsdp")
    from torch.distributed.fsdp import fully_shard

    for unit in _units(model):
        fully_shard(unit)
    fully_shard(model)
    stepper = build_stepper()
    if getattr(stepper, "syncs_gradients", False):
        raise ValueError("--fsdp does not apply to hypergradient towers (they average their own "
                         "gradients); run them under torchrun without --fsdp")
    return stepper


def _units(module: nn.Module) -> list[nn.Module]:
    """The outermost children of ``nn.Sequential``/``nn.ModuleList`` containers that hold
    parameters (a GPT's blocks, an FCN's layers; not the MLP inside a block)."""
    units = []
    for child in module.children():
        if isinstance(module, (nn.Sequential, nn.ModuleList)) and \
                any(True for _ in child.parameters()):
            units.append(child)
        else:
            units += _units(child)
    return units


def reshard(model: nn.Module) -> None:
    """Free every gathered parameter, so that ``model.parameters()`` are the sharded ones (the
    root keeps its gathered parameters between forward and backward by default)."""
    model.reshard()


def full_state(state: Any) -> Any:
    """``state`` (a state dict, nested) with every DTensor gathered whole. A collective: every
    rank must call it, in the same order."""
    DTensor = _dtensor()
    if isinstance(state, DTensor):
        return state.full_tensor()
    if isinstance(state, dict):
        return {k: full_state(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(full_state(v) for v in state)
    return state


def load_state(model: nn.Module, stepper: Any, model_state: dict[str, Any],
               stepper_state: dict[str, Any]) -> None:
    """Load full-tensor state dicts into a sharded model and its stepper (every rank).

    Every per-parameter tensor of an optimiser state inside ``stepper_state`` (the ``state``
    of each nested ``{"state", "param_groups"}`` dict; any stepper wrapping) is sharded the way
    FSDP2 shards the parameters: along dim 0 over the model's mesh.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, model_state, options=StateDictOptions(full_state_dict=True))
    DTensor = _dtensor()
    like = next((p for p in model.parameters() if isinstance(p, DTensor)), None)
    stepper.load_state_dict(_sharded(stepper_state, like) if like is not None
                            else stepper_state)


def _sharded(state: Any, like: Tensor) -> Any:
    if isinstance(state, dict) and "state" in state and "param_groups" in state:
        return {**state, "state": {k: {n: _like(v, like) for n, v in st.items()}
                                   for k, st in state["state"].items()}}
    if isinstance(state, dict):
        return {k: _sharded(v, like) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_sharded(v, like) for v in state)
    return state


def _like(value: Any, like: Tensor) -> Any:
    """A full per-parameter tensor as a DTensor placed like the parameters (``like``)."""
    if not isinstance(value, Tensor) or value.dim() == 0:
        return value
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(value.to(like.device), like.device_mesh, like.placements)


def local_finite(model: nn.Module) -> list[Tensor]:
    """Finite flags of the shards this rank holds (reduce them over the ranks)."""
    DTensor = _dtensor()
    return [torch.isfinite(t.to_local() if isinstance(t, DTensor) else t).all()
            for t in model.state_dict().values() if t.is_floating_point()]
