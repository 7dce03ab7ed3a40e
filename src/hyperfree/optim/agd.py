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

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from . import _distributed, _flags, _foreach, _fresh, _reference, rules
from ._groups import check_multiplier, checked_group, param_groups
from .kinds import Kind, classify, is_normalised
from .presets import DEFAULT_PRESET, Preset, choose_preset

__all__ = ["AGD", "init_weights"]


class AGD(torch.optim.Optimizer):
    r"""Automatic Gradient Descent for any model (module docstring has the algorithm).

    Args:
        params: the model (its trainable parameters; kinds read from their owning modules),
            or an iterable of tensors, ``(name, tensor)`` pairs or param-group dicts together
            with ``model=`` (or ``kinds=`` for every tensor).
        preset: a name from :data:`hyperfree.optim.PRESETS`, a :class:`Preset`, or ``"auto"``
            (the default): ``spectral-momentum`` for a network with a normalisation layer,
            ``spectral-fresh`` for one without (:func:`~hyperfree.optim.choose_preset`).
            :attr:`preset` is the preset chosen.
        gain: dimensionless multiplier of the step (default 1.0, the paper's setting).
        lr: scheduler hook multiplying the step (default 1.0 = AGD as derived).
        model: the module that owns ``params`` when ``params`` is not the module itself.
        kinds: declarations ``{parameter name or tensor: kind}`` overriding the rules table.
        foreach: ``True`` (default) for the fast path, ``False`` for the reference twin.
        ns_steps: Newton–Schulz iterations of the spectral family (default 5).
        sharded_polar: how the spectral family orthogonalises matrices sharded by FSDP2:
            ``"owner"`` (default: each rank orthogonalises its share of the matrices) or
            ``"gather"`` (every rank all of them); see ``docs/agd-speed.md``.

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
                 ns_steps: int = 5, sharded_polar: str = "owner"):
        check_multiplier("gain", gain)
        check_multiplier("lr", lr)
        if isinstance(ns_steps, bool) or not isinstance(ns_steps, int) or ns_steps < 1:
            raise ValueError(f"AGD ns_steps must be an integer >= 1, got {ns_steps!r}")
        if sharded_polar not in _distributed.POLAR_SCHEMES:
            raise ValueError(f"AGD sharded_polar must be one of {_distributed.POLAR_SCHEMES}, "
                             f"got {sharded_polar!r}")
        self._sharded_polar = sharded_polar
        groups, self._infos = param_groups(params, model, kinds)
        self.preset = choose_preset(preset, normalised=is_normalised(
            params if isinstance(params, nn.Module) else model,
            [k for g in groups for k in g["kinds"]]))
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
        if self.preset.estimate == "fresh":
            self._ema()
        params = [p for _, _, p, _ in entries]
        self._setup_sharding()
        if self.defaults["foreach"]:
            self._plan(tuple(range(len(entries))))
        if self.preset.momentum:
            for p in params:
                self.state[p].setdefault("momentum_buffer", torch.zeros_like(
                    p, memory_format=torch.preserve_format))

    def _setup_sharding(self) -> None:
        """DTensor parameters (FSDP2): the rows each holds and the collectives of the step."""
        entries = self._entries()
        params = [p for _, _, p, _ in entries]
        self._sharded = _distributed.ShardedStep([n for _, n, _, _ in entries], params,
                                                 polar=self._sharded_polar) \
            if _distributed.is_sharded(params) else None

    def _plan(self, live: tuple[int, ...]) -> _foreach.Plan:
        """The plan of the entries ``live`` (indices into :meth:`_entries`), cached."""
        plan = self._plans.get(live)
        if plan is None:
            entries = self._entries()
            chosen = [entries[j] for j in live]
            sh = self._sharded
            plan = self._plans[live] = _foreach.build_plan(
                [_local(p) for _, _, p, _ in chosen], [k for _, _, _, k in chosen],
                self.preset.family, shapes=[tuple(p.shape) for _, _, p, _ in chosen],
                rows=[sh.rows[j] for j in live] if sh is not None else None, L=self.L)
            if self.preset.estimate == "fresh":
                _fresh.prepare(plan)
        return plan

    def _init_runtime(self) -> None:
        self._plans: dict[tuple, _foreach.Plan] = {}
        self._flags = _flags.FlagQueue()
        self._cache: list | None = None  # _entries()
        # "host" / "device" forces the non-finite guard (tests); None: host on eager CPU
        self._guard: str | None = None
        self._sharded: _distributed.ShardedStep | None = None
        # counters as 0-dim tensors next to the weights: steps need no host sync and
        # torch.compile(opt.step) does not specialise on them (reading them may sync)
        self._counters: dict[str, Tensor] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()  # plans, caches and collectives are rebuilt on load
        state.update(preset=self.preset, _counters={k: v.clone() for k, v in
                                                    self._counters.items()},
                     _infos=list(self._infos.values()),  # padding_idx etc. for init_weights
                     _sharded_polar=self._sharded_polar)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        counters = state.pop("_counters", {})
        infos = state.pop("_infos", [])
        polar = state.pop("_sharded_polar", "owner")
        super().__setstate__(state)
        self._infos = {id(i.param): i for i in infos}  # ids of the copied parameters
        self._init_runtime()
        self._sharded_polar = polar
        self._counters = dict(counters)
        self._setup_sharding()

    def _counter(self, name: str) -> Tensor:
        if name not in self._counters:
            dev = self.param_groups[0]["params"][0].device if self.param_groups else "cpu"
            self._counters[name] = torch.zeros((), dtype=torch.int64, device=dev)
        return self._counters[name]

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(checked_group(param_group, self._infos, self.defaults))
        self._plans.clear()
        self._cache = None

    # ------------------------------------------------------------------ bookkeeping
    def _entries(self) -> list[tuple[dict[str, Any], str, Tensor, Kind]]:
        """``(group, name, param, kind)`` of every parameter (cached until the groups change)."""
        if self._cache is None:
            self._cache = [(g, n, p, Kind(*k)) for g in self.param_groups
                           for n, p, k in zip(g["param_names"], g["params"], g["kinds"])]
        return self._cache

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
        self._flags.drain(block=True)
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
        for j, (_, name, p, kind) in enumerate(self._entries()):
            info = self._infos.get(id(p))
            pad = info.padding_idx if info is not None else None
            if self._sharded is None:
                rules.init_(p, kind, generator=generator, padding_idx=pad)
            else:  # the whole tensor on every rank (seeded alike), then this rank's rows
                _distributed.init_rows_(p, self._sharded.rows[j], kind, generator, pad)

    # ------------------------------------------------------------------ the step
    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        """One AGD update from the current ``.grad``; returns the closure's loss (or None)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        entries = self._entries()
        grads = [p.grad for _, _, p, _ in entries]
        live = tuple(j for j, g in enumerate(grads) if g is not None)
        if len(live) < len(entries):
            if not live:
                return loss
            grads = [grads[j] for j in live]
        for j, g in zip(live, grads):
            if g.is_sparse:
                raise ValueError(f"AGD does not support sparse gradients (parameter "
                                 f"{entries[j][1]!r}); build the embedding with sparse=False")
        self._counter("step").add_(1)
        compiling = torch.compiler.is_compiling()
        device_guard = compiling or entries[live[0]][2].device.type != "cpu" \
            if self._guard is None else self._guard == "device"
        if device_guard and not compiling:
            self._flags.drain(block=False)
        eta, ok = self._update(live, grads, "device" if device_guard else "host")
        for g in self.param_groups:
            g["eta"] = eta
        if not device_guard:
            if not bool(ok):
                self._counter("skipped").add_(1)
                _flags.warn_nonfinite(_flags.first_nonfinite([entries[j][1] for j in live],
                                                             grads), stacklevel=3)
        else:
            self._counter("skipped").add_((~ok).to(torch.int64))
            if not compiling:
                self._flags.record(ok, [entries[j][1] for j in live])
        return loss

    def _update(self, live: tuple[int, ...], grads: list[Tensor], guard: str
                ) -> tuple[Tensor, Tensor]:
        entries = self._entries()
        chosen = [entries[j] for j in live]
        first = self.param_groups[0]
        if not first["foreach"]:
            return self._reference_update(live, grads)
        preset, sh = self.preset, self._sharded
        beta = preset.momentum
        plan = self._plan(live)
        params = [p for _, _, p, _ in chosen]
        if sh is not None:
            params, grads = [_local(p) for p in params], [_local(g) for g in grads]
        acc = plan.sigma_t.dtype
        us, bc, finite = grads, None, None
        fresh = preset.estimate == "fresh"
        if beta:  # fresh: the direction comes from the momentum BEFORE this gradient
            us, bc, finite = self._momentum([p for _, _, p, _ in chosen], grads, guard, beta,
                                            acc, update=not fresh)
            if guard == "host" and not bool(finite):
                return torch.zeros((), dtype=params[0].dtype, device=params[0].device), finite
        eta, ok = _foreach.foreach_step(
            params, us, plan, multipliers=_multipliers(chosen, plan, params[0].device),
            bias_correction=bc, guard=guard, finite=finite if guard == "device" else None,
            ns_steps=first["ns_steps"], retract=preset.retract,
            reduce=sh.reduce if sh is not None else None,
            polar=sh.polar if sh is not None else None,
            fresh=grads if fresh else None, g_hat=self._g_hat(beta) if fresh else None)
        if fresh:  # then the momentum takes this gradient
            self._take_gradient(us, grads, finite, guard, beta)
        return eta, ok

    def _g_hat(self, beta: float) -> Any:
        """``g_hat(F, ok)`` of the fresh estimate: ``H ← β H + (1 − β) F`` over the steps that
        had a direction (``k ≥ 1`` gradients before this one, all finite), and
        ``G = max(0, H / (1 − β^k))``; ``H`` is state (``state_dict()["agd"]``)."""
        H, k = self._ema(), self._counter("momentum")

        def g_hat(F: Tensor, ok: Tensor | None) -> Tensor:
            valid = k > 0 if ok is None else (k > 0) & ok
            H.copy_(torch.where(valid, beta * H + (1 - beta) * F.to(H.dtype), H))
            kk = k.clamp(min=1).to(H.dtype)
            G = torch.where(k > 0, H / (1 - torch.pow(beta, kk)), 0.0).clamp(min=0.0)
            return G.reshape(())

        return g_hat

    def _ema(self) -> Tensor:
        """The fresh estimate's running average ``H`` (float64, next to the weights). Shape
        ``(1,)``, not 0-dim: on torch 2.13, ``torch.compile`` drops in-place updates of a 0-dim
        float64 CPU tensor held outside the graph (``H.add_(F)`` leaves ``H`` unchanged), which
        made the compiled fresh step keep G = 0 (``tests/optim/test_agd_compile.py``)."""
        if "fresh_ema" not in self._counters:
            dev = self.param_groups[0]["params"][0].device
            self._counters["fresh_ema"] = torch.zeros(1, dtype=torch.float64, device=dev)
        return self._counters["fresh_ema"]

    def _take_gradient(self, bufs: list[Tensor], grads: list[Tensor], finite: Tensor,
                       guard: str, beta: float) -> None:
        """``m ← β m + (1−β) g`` where the gradients are finite; counts it."""
        t = self._counter("momentum")
        if guard == "host":
            if bool(finite):
                torch._foreach_lerp_(bufs, grads, 1 - beta)
                t.add_(1)
        else:
            torch._foreach_lerp_(bufs, [torch.where(finite, g, b) for g, b in zip(grads, bufs)],
                                 1 - beta)
            t.add_(finite.to(t.dtype))

    def _reference_update(self, live: tuple[int, ...], grads: list[Tensor]
                          ) -> tuple[Tensor, Tensor]:
        """The reference twin (``foreach=False``); sharded parameters are gathered whole."""
        chosen = [self._entries()[j] for j in live]
        preset, beta = self.preset, self.preset.momentum
        params = [p for _, _, p, _ in chosen]
        bufs = [self.state[p].get("momentum_buffer") for p in params] if beta else None
        sharded = self._sharded is not None
        if sharded:  # for tests: every tensor whole on every rank, written back afterwards
            full_p = [p.full_tensor() for p in params]
            grads = [g.full_tensor() for g in grads]
            full_b = [b.full_tensor() if b is not None else None for b in bufs] if beta \
                else None
        else:
            full_p, full_b = params, bufs
        finite = all(bool(torch.isfinite(g).all()) for g in grads)
        fresh = preset.estimate == "fresh"
        before = int(self._counter("momentum"))
        if beta and finite:
            self._counter("momentum").add_(1)
        ema = [float(self._ema())] if fresh else None
        eta = _reference.reference_step(
            full_p, grads, [k for _, _, _, k in chosen], family=preset.family,
            gains=[float(g["gain"]) for g, _, _, _ in chosen],
            lrs=[float(g["lr"]) for g, _, _, _ in chosen], momentum=beta, buffers=full_b,
            step=before if fresh else max(int(self._counter("momentum")), 1),
            retract=preset.retract, ns_steps=self.param_groups[0]["ns_steps"], fresh_ema=ema)
        if fresh:
            self._ema().fill_(ema[0])
        if sharded:
            rows = [self._sharded.rows[j] for j in live]
            for p, f, r in zip(params, full_p, rows):
                _local(p).copy_(f.narrow(0, r.start, r.count))
            for b, f, r in zip(bufs or [], full_b or [], rows):
                _local(b).copy_(f.narrow(0, r.start, r.count))
        elif beta:
            for p, b in zip(params, bufs):
                if b is not None:
                    self.state[p]["momentum_buffer"] = b
        return eta, torch.tensor(finite)

    def _momentum(self, params: list[Tensor], grads: list[Tensor], guard: str, beta: float,
                  acc: torch.dtype, update: bool = True) -> tuple[list[Tensor], Tensor, Tensor]:
        """``m ← β m + (1−β) g`` (only where every gradient is finite; not yet if ``update`` is
        False); returns the buffers (local shards), the bias correction ``1/(1−β^t)`` and the
        finite flag of the gradients (over every shard: one small all-reduce when sharded)."""
        bufs = []
        for p in params:
            st = self.state[p]
            if "momentum_buffer" not in st:
                st["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            bufs.append(_local(st["momentum_buffer"]))
        if self._sharded is not None:
            finite = self._sharded.all_finite(grads, acc)
        else:
            finite = torch.isfinite(torch.stack(torch._foreach_norm(grads, dtype=acc)).sum())
        if update:
            self._take_gradient(bufs, grads, finite, guard, beta)
        t = self._counter("momentum")  # momentum updates so far: finite gradients only
        bc = 1.0 / (1.0 - torch.pow(beta, t.clamp(min=1).to(acc)))
        return bufs, bc, finite

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        self._flags.drain(block=True)
        sd["agd"] = {"steps": self.steps, "skipped_steps": self.skipped_steps,
                     "momentum_steps": int(self._counter("momentum")),
                     "preset": self.preset.name}
        if self.preset.estimate == "fresh":
            sd["agd"]["fresh_ema"] = float(self._ema())
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
        if self.preset.estimate == "fresh":
            self._ema().fill_(float(counters.get("fresh_ema", 0.0)))
        self._flags.clear()
        self._plans.clear()
        self._cache = None


def _local(t: Tensor) -> Tensor:
    """The local shard of a DTensor (its in-place updates write through); ``t`` otherwise."""
    return getattr(t, "_local_tensor", t)


def _multipliers(chosen: list, plan: _foreach.Plan, device: torch.device) -> Any:
    """``gain·lr``: one number (or 0-dim tensor) when every group agrees, else ``(n,)`` on the
    device (cached per value, so that a step copies nothing from the host)."""
    first = chosen[0][0]
    m = first["gain"] * first["lr"]
    if all(g is first or (_same(g["gain"], first["gain"]) and _same(g["lr"], first["lr"]))
           for g, _, _, _ in chosen):
        return m
    values = [g["gain"] * g["lr"] for g, _, _, _ in chosen]
    acc = plan.sigma_t.dtype
    if any(isinstance(v, Tensor) for v in values):  # tensor lr: stays on its device
        return torch.stack([torch.as_tensor(v, dtype=acc, device=device) for v in values])
    key = ("multipliers", tuple(values))
    if key not in plan.extra:
        plan.extra[key] = torch.tensor(values, dtype=acc, device=device)
    return plan.extra[key]


def _same(a: Any, b: Any) -> bool:
    """Equal numbers, or the same tensor (comparing tensors' values would sync)."""
    return a is b or (not isinstance(a, Tensor) and not isinstance(b, Tensor) and a == b)


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
