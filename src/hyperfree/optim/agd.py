r"""Automatic Gradient Descent (AGD): an optimiser with no learning rate and no schedule.

Bernstein, Mingard, Huang, Azizan, Yue, *Automatic Gradient Descent: Deep Learning without
Hyperparameters*, arXiv:2304.05187 (2023), Algorithm 1, extended to every parameter kind
(``docs/agd-rules.md``) and to the presets of :mod:`hyperfree.optim.presets`.

.. code-block:: text

    input: a model; each trainable tensor gets a kind (kinds.py) and is cut into cells, each
           with a scale σ and a unit direction map D (rules.py); a preset (family, β, retract)
    L    = Σ_params mass            (a Linear/conv/gain/embedding tensor 1, each packed block 1,
                                      a bias 0)
    init (init_weights): matrices Haar semi-orthogonal × σ per block/slice; embedding rows
           RMS 1; gains 1; biases 0
    step t:  u = ∇ (or m ← β m + (1−β) ∇,  u = m / (1 − β^t))
             G = (1/L) Σ_cells σ_c · ⟨u_c, D(u_c)⟩
             η = log((1 + sqrt(1 + 4G)) / 2)
             W_c ← W_c − gain · lr · (η/L) · σ_c · D(u_c)      for every cell c
             optional retraction of every matrix cell / embedding row to its init norm
    record η in every param group as group["eta"]

``gain`` is the paper's dimensionless multiplier (default 1); ``lr`` (default 1) multiplies the
step too and exists so that learning-rate schedulers and tools that read ``group["lr"]`` work:
leave it at 1 for AGD as derived. Units: every cell moves by ``gain·lr·η/L`` of its target
scale σ, in the norm of its kind.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from . import _foreach, _reference, rules
from .kinds import Kind, ParamInfo, as_kind, classify
from .presets import DEFAULT_PRESET, Preset, get_preset

__all__ = ["AGD", "init_weights"]


def _check_multiplier(name: str, value: Any) -> None:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"AGD {name} must be a number or a 1-element tensor, got shape "
                             f"{tuple(value.shape)}")
        return
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value)
                                       and 0 < value <= 1e6):
        raise ValueError(f"AGD {name} must be a finite number in (0, 1e6], got {value!r}")


def _groups(params: Any, model: nn.Module | None,
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


class AGD(torch.optim.Optimizer):
    r"""Automatic Gradient Descent for any model (module docstring has the algorithm).

    Args:
        params: the model (its trainable parameters; kinds read from their owning modules),
            or an iterable of tensors, ``(name, tensor)`` pairs or param-group dicts together
            with ``model=`` (or ``kinds=`` for every tensor).
        preset: a name from :data:`hyperfree.optim.PRESETS` or a :class:`Preset`.
        gain: dimensionless multiplier of the step (default 1.0, the paper's setting).
        lr: scheduler hook multiplying the step (default 1.0 = AGD as derived).
        model: the module that owns ``params`` when ``params`` is not the module itself.
        kinds: declarations ``{parameter name or tensor: kind}`` overriding the rules table.
        foreach: ``True`` (default) for the fast path, ``False`` for the reference twin.
        ns_steps: Newton–Schulz iterations of the spectral family (default 5).

    Behaviour: ``step(closure)`` returns the closure's loss (torch's convention) and stores η
    in every group as ``group["eta"]`` (a 0-dim tensor; also :attr:`eta`). A parameter whose
    ``.grad`` is ``None`` is not moved but counts in ``L``; a zero cell stays put. Non-finite
    gradients skip the whole step (momentum included): on CPU with a ``RuntimeWarning`` naming
    the first offending parameter, on accelerators without a host sync (the warning comes once
    the flag reaches the host). :attr:`skipped_steps` counts them. ``state_dict`` holds the
    momentum buffers and the counters; deep copies and pickles work.
    """

    def __init__(self, params: Any, *, preset: str | Preset = DEFAULT_PRESET, gain: float = 1.0,
                 lr: float = 1.0, model: nn.Module | None = None,
                 kinds: Mapping[Any, str | Kind] | None = None, foreach: bool = True,
                 ns_steps: int = 5):
        _check_multiplier("gain", gain)
        _check_multiplier("lr", lr)
        if isinstance(ns_steps, bool) or not isinstance(ns_steps, int) or ns_steps < 1:
            raise ValueError(f"AGD ns_steps must be an integer >= 1, got {ns_steps!r}")
        self.preset = get_preset(preset)
        groups, self._infos = _groups(params, model, kinds)
        if not any(len(g["params"]) for g in groups):
            raise ValueError("AGD got no trainable parameters: pass a model with at least one "
                             "parameter that requires grad")
        self._init_runtime()
        # capturable: AGD never syncs with the host on devices (torch.compile sets the key)
        defaults = dict(gain=float(gain), lr=lr, foreach=bool(foreach), ns_steps=ns_steps,
                        preset=self.preset.name, capturable=True)
        super().__init__(groups, defaults)
        if self.L == 0:
            raise ValueError("AGD got only parameters of mass 0 (biases), so L = 0 and the step "
                             "is undefined: train at least one weight, gain or embedding with "
                             "AGD, or give the biases to another optimiser")
        self._prepare()

    def _prepare(self) -> None:
        """Build the plan of the full parameter set and the momentum buffers now, so the first
        step does no set-up work (``torch.compile(opt.step)`` then captures one graph)."""
        entries = self._entries()
        self._counter("step"), self._counter("skipped"), self._counter("momentum")
        if self.defaults["foreach"]:
            self._plan([p for _, _, p, _ in entries], [k for _, _, _, k in entries])
        if self.preset.momentum:
            for _, _, p, _ in entries:
                self.state[p].setdefault("momentum_buffer", torch.zeros_like(
                    p, memory_format=torch.preserve_format))

    def _plan(self, params: list[Tensor], kinds: list[Kind]) -> _foreach.Plan:
        key = (params[0].device, *(id(p) for p in params))
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = _foreach.build_plan(params, kinds, self.preset.family)
        return plan

    def _init_runtime(self) -> None:
        self._plans: dict[tuple, _foreach.Plan] = {}
        self._pending: list[tuple[Tensor, Any, list[str]]] = []
        # counters as 0-dim tensors next to the weights: steps need no host sync and
        # torch.compile(opt.step) does not specialise on them (reading them may sync)
        self._counters: dict[str, Tensor] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.update(preset=self.preset, _counters={k: v.clone() for k, v in
                                                    self._counters.items()},
                     _infos=list(self._infos.values()))  # padding_idx etc. for init_weights
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        counters = state.pop("_counters", {})
        infos = state.pop("_infos", [])
        super().__setstate__(state)
        self._infos = {id(i.param): i for i in infos}  # ids of the copied parameters
        self._init_runtime()
        self._counters = dict(counters)

    def _counter(self, name: str) -> Tensor:
        if name not in self._counters:
            dev = self.param_groups[0]["params"][0].device if self.param_groups else "cpu"
            self._counters[name] = torch.zeros((), dtype=torch.int64, device=dev)
        return self._counters[name]

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        params = param_group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        if "kinds" not in param_group:  # added after construction: kinds from the model
            missing = [i for i, p in enumerate(params) if id(p) not in self._infos]
            if missing:
                raise ValueError("AGD.add_param_group: parameter #%d is not part of the model "
                                 "AGD was built with; give the group 'kinds': [KIND, ...]"
                                 % missing[0])
            infos = [self._infos[id(p)] for p in params]
            param_group = {**param_group, "kinds": [i.kind for i in infos],
                           "param_names": param_group.get("param_names")
                           or [i.name for i in infos]}
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
            rules.check_shape(name, p.shape, kind)
        for key in ("gain", "lr"):
            _check_multiplier(key, param_group.get(key, self.defaults[key]))
        eta = param_group.get("eta")
        if eta is None:  # η of the last step, for loggers; present from the start
            eta = torch.zeros((), dtype=params[0].dtype if params else torch.float32,
                              device=params[0].device if params else "cpu")
        super().add_param_group({**param_group, "params": params, "param_names": names,
                                 "kinds": [(k.name, k.blocks, k.groups) for k in kinds],
                                 "eta": eta})
        self._plans.clear()

    # ------------------------------------------------------------------ bookkeeping
    def _entries(self) -> list[tuple[dict[str, Any], str, Tensor, Kind]]:
        return [(g, n, p, Kind(*k)) for g in self.param_groups
                for n, p, k in zip(g["param_names"], g["params"], g["kinds"])]

    @property
    def L(self) -> int:
        """``L = Σ mass`` over every parameter of every group."""
        return sum(rules.mass(p.shape, k) for _, _, p, k in self._entries())

    @property
    def eta(self) -> Tensor:
        """η of the last step (a 0-dim tensor on the parameters' device; 0 before any)."""
        return self.param_groups[0]["eta"]

    @property
    def skipped_steps(self) -> int:
        """Steps skipped because of non-finite gradients (reading it may wait for the device)."""
        self._drain(block=True)
        return int(self._counter("skipped"))

    @property
    def steps(self) -> int:
        """Steps taken (skipped ones included)."""
        return int(self._counter("step"))

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """Initialise every parameter by its kind's rule (``docs/agd-rules.md``).

        Refuses (ValueError) once the optimiser has taken or restored steps: re-initialising
        then would wipe trained weights. Under frameworks that restore weights after building
        the optimiser (Lightning), call :func:`hyperfree.optim.init_weights` on the model
        where the model is built instead.
        """
        if self.steps:
            raise ValueError(f"AGD.init_weights() after {self.steps} steps would "
                             "wipe the trained weights; initialise before training, where the "
                             "model is built (hyperfree.optim.init_weights(model))")
        for _, name, p, kind in self._entries():
            info = self._infos.get(id(p))
            rules.init_(p, kind, generator=generator,
                        padding_idx=info.padding_idx if info is not None else None)


    def _warn_nonfinite(self, name: str) -> None:
        warnings.warn(f"AGD skipped a step: the gradient of {name!r} is not finite (NaN or "
                      "Inf); weights and momentum left unchanged", RuntimeWarning, stacklevel=3)

    def _drain(self, block: bool) -> None:
        """Read the finite flags of earlier device-side steps that have reached the host."""
        still = []
        for flags, event, names in self._pending:
            if event is not None and not event.query():
                if not block:
                    still.append((flags, event, names))
                    continue
                event.synchronize()
            if not bool(flags[0]):  # counted on the device already
                self._warn_nonfinite("one of " + ", ".join(names[:3])
                                     + (", ..." if len(names) > 3 else ""))
        self._pending = still

    # ------------------------------------------------------------------ the step
    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        """One AGD update from the current ``.grad``; returns the closure's loss (or None)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        live = [(g, n, p, k) for g, n, p, k in self._entries() if p.grad is not None]
        if not live:
            return loss
        for _, n, p, _ in live:
            if p.grad.is_sparse:
                raise ValueError(f"AGD does not support sparse gradients (parameter {n!r}); "
                                 "build the embedding with sparse=False")
        self._counter("step").add_(1)
        params = [p for _, _, p, _ in live]
        grads = [p.grad for p in params]
        names = [n for _, n, _, _ in live]
        device_guard = params[0].device.type != "cpu" or torch.compiler.is_compiling()
        if device_guard and not torch.compiler.is_compiling():
            self._drain(block=False)
        eta, ok = self._update(live, params, grads, "device" if device_guard else "host")
        for g in self.param_groups:
            g["eta"] = eta
        if not device_guard:
            if not bool(ok):
                self._counter("skipped").add_(1)
                self._warn_nonfinite(_first_nonfinite(names, grads))
        else:
            self._counter("skipped").add_((~ok).to(torch.int64))
            if not torch.compiler.is_compiling():
                self._record_flag(ok, names, grads)
        return loss

    def _update(self, live: list, params: list[Tensor], grads: list[Tensor], guard: str
                ) -> tuple[Tensor, Tensor]:
        preset = self.preset
        kinds = [k for _, _, _, k in live]
        L = self.L
        first = self.param_groups[0]
        beta = preset.momentum
        dev, acc = params[0].device, _foreach.acc_dtype(params[0].dtype)
        if not first["foreach"]:
            bufs = [self.state[p].get("momentum_buffer") for p in params] if beta else None
            finite = all(bool(torch.isfinite(g).all()) for g in grads)
            if beta and finite:
                self._counter("momentum").add_(1)
            eta = _reference.reference_step(
                params, grads, kinds, family=preset.family,
                gains=[float(g["gain"]) for g, _, _, _ in live],
                lrs=[float(g["lr"]) for g, _, _, _ in live], momentum=beta, buffers=bufs,
                step=max(int(self._counter("momentum")), 1), retract=preset.retract,
                ns_steps=first["ns_steps"])
            if beta:
                for p, b in zip(params, bufs):
                    if b is not None:
                        self.state[p]["momentum_buffer"] = b
            ok = torch.isfinite(torch.stack([torch.linalg.vector_norm(g.double()) for g in grads]
                                            ).sum())
            return eta, ok
        plan = self._plan(params, kinds)
        multipliers = torch.cat([torch.full((1,), 1.0, dtype=acc, device=dev).mul_(g["gain"])
                                 .mul_(g["lr"]) for g, _, _, _ in live]) \
            if _varies(live) else None
        us, bc, ok_g = grads, None, None
        if beta:
            us, bc, ok_g = self._momentum(params, grads, guard, beta, acc)
            if ok_g is not None and guard == "host" and not bool(ok_g):
                return torch.zeros((), dtype=params[0].dtype, device=dev), ok_g
        if multipliers is None:
            g0 = live[0][0]
            multipliers = torch.full((len(params),), 1.0, dtype=acc, device=dev) \
                .mul_(g0["gain"]).mul_(g0["lr"])
        eta, ok = _foreach.foreach_step(params, us, plan, L=L, multipliers=multipliers,
                                        bias_correction=bc, guard=guard,
                                        ns_steps=first["ns_steps"], retract=preset.retract)
        return eta, (ok if ok_g is None else ok & ok_g)

    def _momentum(self, params: list[Tensor], grads: list[Tensor], guard: str, beta: float,
                  acc: torch.dtype) -> tuple[list[Tensor], Tensor, Tensor]:
        """``m ← β m + (1−β) g`` (only where every gradient is finite); returns the buffers,
        the bias correction ``1/(1−β^t)`` and the finite flag of the gradients."""
        bufs = []
        for p in params:
            st = self.state[p]
            if "momentum_buffer" not in st:
                st["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            bufs.append(st["momentum_buffer"])
        ok_g = torch.isfinite(torch.stack(torch._foreach_norm(grads, dtype=acc)).sum())
        t = self._counter("momentum")  # momentum updates so far: finite gradients only
        if guard == "host":
            if bool(ok_g):
                torch._foreach_lerp_(bufs, grads, 1 - beta)
                t.add_(1)
        else:
            torch._foreach_lerp_(bufs, [torch.where(ok_g, g, b) for g, b in zip(grads, bufs)],
                                 1 - beta)
            t.add_(ok_g.to(t.dtype))
        bc = 1.0 / (1.0 - torch.pow(beta, t.clamp(min=1).to(acc)))
        return bufs, bc, ok_g

    def _record_flag(self, ok: Tensor, names: list[str], grads: list[Tensor]) -> None:
        """Queue the step's finite flag for the host without waiting for the device."""
        flags = ok.reshape(1)
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
        self._drain(block=True)
        sd["agd"] = {"steps": self.steps, "skipped_steps": self.skipped_steps,
                     "momentum_steps": int(self._counter("momentum")),
                     "preset": self.preset.name}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        counters = state_dict.pop("agd", {"steps": 0, "skipped_steps": 0})
        saved = counters.get("preset", self.preset.name)
        if saved != self.preset.name:
            raise ValueError(f"this AGD state was saved with preset {saved!r}, not "
                             f"{self.preset.name!r}; build AGD(..., preset={saved!r}) to resume")
        for g_new, g_old in zip(self.param_groups, state_dict.get("param_groups", [])):
            old = [tuple(k) for k in g_old.get("kinds", g_new["kinds"])]
            if old != [tuple(k) for k in g_new["kinds"]]:
                raise ValueError("this AGD state was saved for parameters of other kinds "
                                 f"({old} vs {g_new['kinds']}); load it into the same model")
        super().load_state_dict(state_dict)
        for g in self.param_groups:
            g["kinds"] = [tuple(k) for k in g["kinds"]]
        self._counter("step").fill_(int(counters["steps"]))
        self._counter("skipped").fill_(int(counters["skipped_steps"]))
        self._counter("momentum").fill_(int(counters.get("momentum_steps", counters["steps"])))
        self._pending = []
        self._plans.clear()


def _varies(live: list) -> bool:
    first = live[0][0]
    return any(g is not first and (g["gain"], g["lr"]) != (first["gain"], first["lr"])
               for g, _, _, _ in live)


def _first_nonfinite(names: list[str], grads: list[Tensor]) -> str:
    for n, g in zip(names, grads):
        if not bool(torch.isfinite(g).all()):
            return n
    return names[0]


@torch.no_grad()
def init_weights(model: nn.Module, *, kinds: Mapping[Any, str | Kind] | None = None,
                 generator: torch.Generator | None = None) -> nn.Module:
    """Initialise every trainable parameter of ``model`` by its kind's rule, in place.

    The same initialisation as ``AGD(model).init_weights()``, without an optimiser: call it
    where the model is built (e.g. a LightningModule's ``__init__``), so that a framework that
    restores weights after building the optimiser overwrites it, never the reverse.
    """
    for info in classify(model, kinds):
        rules.check_shape(info.name, info.param.shape, info.kind)
        rules.init_(info.param, info.kind, generator=generator, padding_idx=info.padding_idx)
    return model
