r"""Automatic Gradient Descent (AGD): an optimiser with no learning rate and no schedule.

Bernstein, Mingard, Huang, Azizan, Yue, *Automatic Gradient Descent: Deep Learning without
Hyperparameters*, arXiv:2304.05187 (2023), Algorithm 1. ``../shared/SPEC.md`` §1.1.

.. code-block:: text

    input: weights W_1..W_L (2-D Linear or 4-D Conv2d), gain (dimensionless, default 1)
    s(W)  = sqrt(d_out/d_in)                       (2-D)
          = sqrt(c_out/c_in) / sqrt(k_x k_y)       (4-D; each (c_out, c_in) kernel slice)
    init:  every 2-D W and every 4-D kernel slice uniform semi-orthogonal, then W *= s(W)
    step:  G = (1/L) Σ_W s(W) Σ_slices ‖∇W_slice‖_F
           η = log((1 + sqrt(1 + 4G)) / 2)
           W_slice ← W_slice − gain · (η/L) · s(W) · ∇W_slice / ‖∇W_slice‖_F
    return η

Units: the update moves every slice by ``gain · η/L`` times its target scale in spectral norm,
relative to the slice's own initial scale ``s(W)``.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from ._functional import _multi_tensor_agd, _single_tensor_agd, num_slices, target_scale
from .init import orthogonal_init_

__all__ = ["AGD", "agd_update", "target_scale"]

_SUPPORTED = ("only 2-D Linear weights (d_out, d_in) and 4-D Conv2d weights "
              "(c_out, c_in, k_x, k_y) are supported in paper-exact mode; build the model with "
              "bias=False and BatchNorm(affine=False)")


def agd_update(params: list[Tensor], grads: list[Tensor], *, L: int | None = None,
               gain: float = 1.0, foreach: bool = True) -> Tensor:
    """One AGD step on ``params`` in place (functional form). Returns η (0-dim tensor).

    ``L`` defaults to ``len(params)``; pass the network's total when updating a subset.
    No check for non-finite gradients is made here; :class:`AGD` does that.
    """
    L = len(params) if L is None else L
    scales = [target_scale(p.shape) for p in params]
    path = _multi_tensor_agd if foreach else _single_tensor_agd
    with torch.no_grad():
        eta, _ = path(params, grads, scales, L, [gain] * len(params), lambda G: True)
    return eta


def _named(params: Any) -> list[dict[str, Any]]:
    """Normalise the constructor's input into param groups with ``names``."""
    if isinstance(params, nn.Module):
        named = [(n, p) for n, p in params.named_parameters() if p.requires_grad]
        return [{"params": [p for _, p in named], "names": [n for n, _ in named]}]
    if isinstance(params, Tensor):
        raise TypeError("AGD expects a model or an iterable of parameters, got a single Tensor; "
                        "wrap it in a list")
    items = list(params)
    if items and isinstance(items[0], dict):
        return [dict(g) for g in items]
    if items and isinstance(items[0], tuple):
        return [{"params": [p for _, p in items], "names": [n for n, _ in items]}]
    return [{"params": items}]


def _check_gain(gain: Any) -> None:
    if isinstance(gain, bool) or not (isinstance(gain, (int, float)) and math.isfinite(gain)
                                      and gain > 0):
        raise ValueError(f"AGD gain must be a finite number > 0, got {gain!r}")


def _finite(total: float) -> bool:
    return math.isfinite(total)


def _slice_owners(names: list[str], params: list[Tensor]) -> list[str]:
    """``owners[i]`` names the tensor that slice ``i`` (in ``terms`` order) belongs to."""
    return [n for n, p in zip(names, params) for _ in range(num_slices(p.shape))]


class AGD(torch.optim.Optimizer):
    r"""Automatic Gradient Descent, paper-exact (module docstring has the algorithm).

    Args:
        params: an ``nn.Module`` (its trainable parameters, with names for error messages), an
            iterable of tensors or ``(name, tensor)`` pairs, or param-group dicts.
        gain: dimensionless multiplier of the step (default 1.0, the paper's setting).
        foreach: ``True`` (default) for the fast path, ``False`` for the reference twin.

    Behaviour:
        * ``step()`` returns η as a 0-dim tensor on the parameters' device (no host sync).
        * A parameter whose ``.grad`` is ``None`` is not updated but still counts in ``L``;
          ``L`` is the number of parameters over all groups.
        * A slice whose gradient is exactly zero is left unchanged.
        * Non-finite gradients skip the whole step: on CPU at once, with a warning naming the
          first offending parameter; on accelerators without a host sync (the step becomes a
          no-op on the device and the warning is issued once the flag has reached the host).
          ``skipped_steps`` counts such steps.
        * AGD keeps no per-parameter state; ``state_dict`` carries the step counters.
    """

    def __init__(self, params: Any, *, gain: float = 1.0, foreach: bool = True):
        _check_gain(gain)
        groups = _named(params)
        if not any(len(g["params"]) for g in groups):
            raise ValueError("AGD got no trainable parameters: pass a model with at least one "
                             "Linear or Conv2d weight that requires grad")
        self._steps = 0
        self._skipped = 0
        self._pending: list[tuple[Tensor, Any, list[str]]] = []
        self._device_gated: bool | None = None  # None: sync-free iff params are not on CPU
        super().__init__(groups, dict(gain=float(gain), foreach=bool(foreach)))

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        params = param_group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        names = param_group.get("names")
        if names is None:
            start = sum(len(g["params"]) for g in self.param_groups)
            names = [f"param {start + i}" for i in range(len(params))]
        if len(names) != len(params):
            raise ValueError(f"AGD param group has {len(params)} params but {len(names)} names")
        for name, p in zip(names, params):
            if p.dim() not in (2, 4):
                raise ValueError(f"AGD cannot train parameter {name!r} of shape "
                                 f"{tuple(p.shape)}: {_SUPPORTED}")
            if not p.is_floating_point():
                raise ValueError(f"AGD parameter {name!r} has dtype {p.dtype}; "
                                 "it must be floating point")
        _check_gain(param_group.get("gain", self.defaults["gain"]))
        super().add_param_group({**param_group, "params": params, "names": list(names)})

    # ------------------------------------------------------------------ bookkeeping
    def _all_params(self) -> list[tuple[str, Tensor, float]]:
        return [(n, p, g["gain"]) for g in self.param_groups for n, p in zip(g["names"], g["params"])]

    @property
    def skipped_steps(self) -> int:
        """Steps skipped because of non-finite gradients (reading it may wait for the device)."""
        self._drain(block=True)
        return self._skipped

    @property
    def L(self) -> int:
        """The number of weight tensors, over all param groups."""
        return sum(len(g["params"]) for g in self.param_groups)

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """The paper's initialisation: each matrix / kernel slice semi-orthogonal, times s(W)."""
        for _, p, _ in self._all_params():
            orthogonal_init_(p, target_scale(p.shape), generator=generator)

    def _warn_nonfinite(self, name: str) -> None:
        warnings.warn(f"AGD skipped a step: the gradient of {name!r} contains NaN or Inf; "
                      "weights left unchanged", RuntimeWarning, stacklevel=3)

    def _drain(self, block: bool) -> None:
        """Read the finite flags of earlier sync-free steps that have reached the host."""
        still = []
        for flags, event, names in self._pending:
            if event is not None and not event.query():
                if not block:
                    still.append((flags, event, names))
                    continue
                event.synchronize()
            if not bool(flags[0]):
                self._skipped += 1
                self._warn_nonfinite(names[int(torch.nonzero(~flags[1:]).flatten()[0])])
        self._pending = still

    @torch.no_grad()
    def step(self, closure: Any = None) -> Tensor:  # type: ignore[override]
        """Apply one AGD update from the current ``.grad``; returns η (0-dim tensor)."""
        if closure is not None:
            with torch.enable_grad():
                closure()
        entries = self._all_params()
        L = len(entries)
        live = [(n, p, gn) for n, p, gn in entries if p.grad is not None]
        if not live:
            return torch.zeros((), device=entries[0][1].device, dtype=entries[0][1].dtype)
        for n, p, _ in live:
            if p.grad.is_sparse:
                raise ValueError(f"AGD does not support sparse gradients (parameter {n!r})")
        names = [n for n, _, _ in live]
        params = [p for _, p, _ in live]
        grads = [p.grad for p in params]
        gains = [gn for _, _, gn in live]
        scales = [target_scale(p.shape) for p in params]
        gated = self._device_gated if self._device_gated is not None else params[0].device.type != "cpu"
        foreach = self.param_groups[0]["foreach"]
        self._steps += 1
        if gated:
            self._drain(block=False)
            eta, terms = _multi_tensor_agd(params, grads, scales, L, gains, None)
            self._record_flags(terms, _slice_owners(names, params))
            return eta
        path = _multi_tensor_agd if foreach else _single_tensor_agd
        eta, terms = path(params, grads, scales, L, gains, _finite)
        if not math.isfinite(float(eta)):  # skipped: the path applied nothing
            self._skipped += 1
            bad = int(torch.nonzero(~torch.isfinite(terms)).flatten()[0])
            self._warn_nonfinite(_slice_owners(names, params)[bad])
            return torch.zeros_like(eta)
        return eta

    def _record_flags(self, terms: Tensor, names: list[str]) -> None:
        """Queue ``[all finite, slice_i finite...]`` for the host without waiting for it.

        ``names[i]`` names the tensor that slice ``i`` belongs to."""
        finite = torch.isfinite(terms)
        flags = torch.cat([finite.all().reshape(1), finite])
        if flags.device.type == "cuda":
            host = torch.empty(flags.shape, dtype=flags.dtype, pin_memory=True)
            host.copy_(flags, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self._pending.append((host, event, names))
        else:
            self._pending.append((flags, None, names))
            self._drain(block=False)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["agd"] = {"steps": self._steps, "skipped_steps": self.skipped_steps}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        counters = state_dict.pop("agd", {"steps": 0, "skipped_steps": 0})
        super().load_state_dict(state_dict)
        self._steps = int(counters["steps"])
        self._skipped = int(counters["skipped_steps"])
        self._pending = []
