"""Param groups of :class:`hyperfree.optim.AGD`: names and kinds of every tensor, checked.

Bookkeeping only (the class's constructor and ``add_param_group`` use it): a model gives every
parameter its kind from the owning module (:mod:`hyperfree.optim.kinds`); an iterable of tensors
or group dicts needs ``model=`` or ``kinds=``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from .kinds import Kind, ParamInfo, as_kind, classify

__all__ = ["check_multiplier", "param_groups"]


def check_multiplier(name: str, value: Any) -> None:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"AGD {name} must be a number or a 1-element tensor, got shape "
                             f"{tuple(value.shape)}")
        return
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value)
                                       and 0 < value <= 1e6):
        raise ValueError(f"AGD {name} must be a finite number in (0, 1e6], got {value!r}")


def param_groups(params: Any, model: nn.Module | None,
            kinds: Mapping[Any, str | Kind] | None) -> tuple[list[dict[str, Any]], dict]:
    """Param groups with ``param_names`` and ``kinds`` from the owning modules or ``kinds``."""
    if isinstance(params, nn.Module):
        model, params = params, None
    infos: dict[int, ParamInfo] = {}
    if model is not None:
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
