"""Param groups of :class:`hyperfree.optim.AGD`: names and kinds of every tensor, checked.

Bookkeeping only (the class's constructor and ``add_param_group`` use it): a model gives every
parameter its kind from the owning module (:mod:`hyperfree.optim.kinds`); an iterable of tensors
or group dicts needs ``model=`` or ``kinds=``.

Settings ported from other optimisers (:data:`PORTED`) are caught here, in the constructor's
keywords and in every group: ``weight_decay=0`` is accepted (it is what AGD does: no decay),
any other ``weight_decay`` and any ``betas``, ``momentum`` or ``eps`` are refused with one
line saying what AGD does instead. An ``lr`` more than 10x from 1 warns once that it multiplies
AGD's own step (1 is AGD as derived).
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .kinds import Kind, ParamInfo, as_kind, classify
from .rules import rule_of

__all__ = ["MULTIPLIER_MAX", "check_multiplier", "checked_group", "param_groups", "gain_lr",
           "refuse_ported", "warn_lr", "PORTED"]

_MOMENTUM = ("AGD has no {key}: momentum is a piece of its preset (the default chooses "
             "'spectral-momentum', an average with beta 0.95, for normalised networks; "
             "preset='spectral' or 'paper' has none): remove {key!r}")
#: Settings of other optimisers and why AGD refuses them (``weight_decay=0`` is accepted).
PORTED: dict[str, str] = {
    "weight_decay": "AGD has no weight decay: every step is relative to each weight's target "
                    "scale, and preset='spectral-sphere' keeps every matrix at its initial norm; "
                    "remove weight_decay (0 is accepted) or give those parameters to another "
                    "optimiser",
    "betas": _MOMENTUM.format(key="betas"),
    "momentum": _MOMENTUM.format(key="momentum"),
    "eps": "AGD has no eps: it divides by no running second moment (a cell whose gradient is "
           "exactly zero stays put): remove 'eps'",
}
_LR_FAR = 10.0  # an lr this far from 1 (either way) warns


def refuse_ported(settings: Mapping[str, Any], where: str = "AGD") -> None:
    """ValueError (one line) for a setting of :data:`PORTED` AGD cannot honour; TypeError for
    a keyword AGD does not take."""
    for key, value in settings.items():
        if key not in PORTED:
            raise TypeError(f"{where} got an unexpected keyword argument {key!r}")
        if key == "weight_decay" and not isinstance(value, bool) and value == 0:
            continue
        raise ValueError(f"{where} {key}={value!r}: {PORTED[key]}")


def warn_lr(values: list[Any], stacklevel: int = 3) -> None:
    """Warn once when an ``lr`` of ``values`` is far from 1: it multiplies the step AGD derives
    (a ported AdamW lr such as 3e-4 makes every step ~3,000x smaller)."""
    far = []
    for value in values:
        if isinstance(value, Tensor):
            if value.device.type != "cpu" or value.numel() != 1:
                continue
            value = float(value)
        if isinstance(value, (int, float)) and not 1 / _LR_FAR <= value <= _LR_FAR \
                and value not in far:
            far.append(value)
    if far:
        shown = ", ".join(f"{v:g}" for v in far)
        warnings.warn(f"AGD lr={shown} multiplies AGD's own step: lr=1 (the default) is AGD as "
                      f"derived, so every step is {shown}x the derived one. AGD needs no "
                      "learning rate; leave lr out unless a schedule should scale the step",
                      UserWarning, stacklevel=stacklevel)


#: the largest gain (and lr) AGD takes: beyond it a step is no longer a multiple of the derived one
MULTIPLIER_MAX = 1e6


def check_multiplier(name: str, value: Any) -> None:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"AGD {name} must be a number or a 1-element tensor, got shape "
                             f"{tuple(value.shape)}")
        return
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value)
                                       and 0 < value <= MULTIPLIER_MAX):
        raise ValueError(f"AGD {name} must be a finite number in (0, {MULTIPLIER_MAX:g}], got "
                         f"{value!r}")


def param_groups(params: Any, model: nn.Module | None,
                 kinds: Mapping[Any, str | Kind] | None,
                 classified: list[ParamInfo] | None = None) -> tuple[list[dict[str, Any]], dict]:
    """Param groups with ``param_names`` and ``kinds`` from the owning modules (``classified``:
    the model's kinds, resolved already) or ``kinds``."""
    if isinstance(params, nn.Module):
        model, params = params, None
    infos: dict[int, ParamInfo] = {}
    if classified is not None:
        infos = {id(i.param): i for i in classified}
    elif model is not None:
        infos = {id(i.param): i for i in classify(model, kinds)}
    if params is None:
        items = list(infos.values())
        return [{"params": [i.param for i in items], "param_names": [i.name for i in items],
                 "kinds": [i.kind for i in items]}], infos
    if isinstance(params, Tensor):
        raise TypeError("AGD expects a model or an iterable of parameters, got a single Tensor; "
                        "pass the model itself: AGD(model)")
    items = list(params)
    raw = [dict(g) for g in items] if items and isinstance(items[0], dict) else [{"params": items}]
    groups = []
    for g in raw:
        ps = g["params"]
        ps = [ps] if isinstance(ps, Tensor) else list(ps)
        pairs = [(p if isinstance(p, tuple) else (None, p)) for p in ps]
        names = list(g.pop("param_names", None) or [n for n, _ in pairs])
        g.pop("names", None)
        tensors = [p for _, p in pairs]
        group_kinds = []
        for j, (name, p) in enumerate(zip(names, tensors)):
            info = infos.get(id(p))
            if info is not None:
                names[j] = name or info.name
                group_kinds.append(info.kind)
                continue
            declared = _declared(kinds, p, name)
            if declared is None:
                raise ValueError(
                    f"AGD does not know what parameter {name or f'#{j}'!r} (shape "
                    f"{tuple(p.shape)}) is: pass the model itself, AGD(model), or "
                    "AGD(params, model=model), or declare it with kinds={param: KIND}")
            names[j] = name or f"param {j}"
            group_kinds.append(as_kind(declared))
        groups.append({**g, "params": tensors, "param_names": names, "kinds": group_kinds})
    return groups, infos


def _declared(kinds: Mapping[Any, Any] | None, p: Tensor, name: str | None) -> Any:
    if not kinds:
        return None
    for key, value in kinds.items():
        if key is p or (name is not None and key == name):
            return value
    return None


def checked_group(param_group: dict[str, Any], infos: dict[int, ParamInfo],
                  defaults: dict[str, Any]) -> dict[str, Any]:
    """``param_group`` with ``params`` as a list, ``param_names``, ``kinds`` as tuples and
    ``eta``; a group added after construction takes its kinds from the model (``infos``).
    ValueError for an unknown parameter, a shape its kind cannot have, a non-float dtype or a
    bad ``gain``/``lr``."""
    params = param_group["params"]
    params = [params] if isinstance(params, Tensor) else list(params)
    if "kinds" not in param_group:  # added after construction: kinds from the model
        missing = [i for i, p in enumerate(params) if id(p) not in infos]
        if missing:
            raise ValueError("AGD.add_param_group: parameter #%d is not part of the model "
                             "AGD was built with; give the group 'kinds': [KIND, ...]"
                             % missing[0])
        found = [infos[id(p)] for p in params]
        param_group = {**param_group, "kinds": [i.kind for i in found],
                       "param_names": param_group.get("param_names")
                       or [i.name for i in found]}
    names = list(param_group.get("param_names") or [f"param {i}" for i in range(len(params))])
    kinds = [Kind(*k) if isinstance(k, (tuple, list)) else as_kind(k)
             for k in param_group["kinds"]]
    if not (len(names) == len(kinds) == len(params)):
        raise ValueError(f"AGD param group has {len(params)} params, {len(names)} names "
                         f"and {len(kinds)} kinds")
    for name, p, kind in zip(names, params, kinds):
        if not p.is_floating_point():
            raise ValueError(f"AGD parameter {name!r} has dtype {p.dtype}; it must be "
                             "floating point")
        if p.is_meta:
            raise ValueError(f"AGD parameter {name!r} is on the meta device (it holds no "
                             "values): build AGD once the model is materialised, e.g. "
                             "model.to_empty(device='cpu') and then its initialisation")
        rule_of(kind).check(name, p.shape, kind)
    refuse_ported({k: v for k, v in param_group.items() if k in PORTED}, "AGD param group")
    for key in ("gain", "lr"):
        check_multiplier(key, param_group.get(key, defaults[key]))
    eta = param_group.get("eta")
    if eta is None:  # η of the last step, for loggers; present from the start
        eta = torch.zeros((), dtype=params[0].dtype if params else torch.float32,
                          device=params[0].device if params else "cpu")
    # torch.compile writes group["capturable"] = True into every group it traces, and guards on
    # it: present from the start, else the first compiled step recompiles. It is true: a
    # captured step (torch.compile, a CUDA graph) always takes the device finish, which never
    # synchronises with the host; only the EAGER step on CPU finishes on the host, which is
    # not a capture. The step reads the device and torch.compiler.is_compiling(), never this key.
    return {**param_group, "params": params, "param_names": names,
            "kinds": [dataclasses.astuple(k) for k in kinds], "eta": eta,
            "capturable": True}


def gain_lr(chosen: list, plan: Any, cache: dict) -> Any:
    """``gain·lr`` of the entries ``chosen`` (``(group, name, param, kind)``): one number (or
    0-dim tensor) when every group agrees, else ``(n,)`` on the plan's device (kept in
    ``cache`` per value, so that a step copies nothing from the host)."""
    first = chosen[0][0]
    if all(g is first or (_same(g["gain"], first["gain"]) and _same(g["lr"], first["lr"]))
           for g, _, _, _ in chosen):
        return first["gain"] * first["lr"]
    values = [g["gain"] * g["lr"] for g, _, _, _ in chosen]
    acc, device = plan.consts.sq_w.dtype, plan.consts.sq_w.device
    if any(isinstance(v, Tensor) for v in values):  # tensor lr: stays on its device
        return torch.stack([torch.as_tensor(v, dtype=acc, device=device) for v in values])
    key = tuple(values)
    if key not in cache:
        if len(cache) >= 8:
            cache.clear()
        cache[key] = torch.tensor(values, dtype=acc, device=device)
    return cache[key]


def _same(a: Any, b: Any) -> bool:
    """Equal numbers, or the same tensor (comparing tensors' values would sync)."""
    return a is b or (not isinstance(a, Tensor) and not isinstance(b, Tensor) and a == b)
