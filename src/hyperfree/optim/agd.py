r"""Automatic Gradient Descent (AGD): an optimiser with no learning rate and no schedule.

The class is bookkeeping — parameter kinds and groups, the pieces' state, the plan of the fast
step, counters, non-finite reporting, ``state_dict`` — around the pure step
:func:`hyperfree.optim.functional.agd`, whose docstring carries the algorithm of every preset.
In brief (Bernstein et al. 2023, arXiv:2304.05187, Algorithm 1):

.. code-block:: text

    G = (1/L) Σ_cells σ_c ⟨u_c, D(u_c)⟩      (u: the gradient, or its momentum)
    η = log((1 + sqrt(1 + 4G)) / 2)
    W_c ← W_c − gain · lr · (η/L) · σ_c · D(u_c)   for every cell c of every parameter
"""
from __future__ import annotations

import dataclasses
import warnings
from collections import OrderedDict, defaultdict
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from . import _distributed, _flags
from ._averaging import AveragedWeights
from ._declare import report, summary
from ._groups import (check_multiplier, checked_group, gain_lr, param_groups, refuse_ported,
                      warn_lr)
from ._head import HeadScale, head_multipliers
from ._piece_state import PieceStates, local
from ._plan import Plan, build_plan
from ._resolve import KindsNote, Resolution, loaded_kinds
from .functional import Shards, agd
from .init_model import init_weights, warn_uncalibrated  # init_weights: also here, as before
from .kinds import INIT_ORIGINS, Kind, ParamInfo
from .presets import DEFAULT_PRESET, Preset, get_preset, redefinition, with_ns_steps
from .rules import rule_of

__all__ = ["AGD", "init_weights", "KindsNote"]

_PLANS = 8  # plans kept per optimiser (one per set of parameters that had gradients)
#: the settings AGD takes besides its named arguments (keyword only), with their defaults
SETTINGS = {"infer": True, "ns_steps": 5, "sharded_polar": "owner"}


class AGD(AveragedWeights, torch.optim.Optimizer):
    r"""Automatic Gradient Descent for any model (:mod:`hyperfree.optim.functional` has the
    algorithm of every preset).

    Args:
        params: the model (its trainable parameters; kinds read from their owning modules),
            or an iterable of tensors, ``(name, tensor)`` pairs or param-group dicts together
            with ``model=`` (or ``kinds=`` for every tensor).
        preset: a name from :data:`hyperfree.optim.PRESETS` or a :class:`Preset`; the
            default ``spectral-head`` is one rule for every network (``"auto"`` names it).
        gain: dimensionless multiplier of the step (default 1.0, the paper's setting).
        lr: scheduler hook multiplying the step (default 1.0 = AGD as derived).
        model: the module that owns ``params`` when ``params`` is not the module itself.
        kinds: declarations ``{parameter name or tensor: kind}`` overriding the rules table.
        example: an input of the model (a tensor, a tuple of arguments or a dict of keyword
            arguments) to read the kinds no table entry gives from one forward now
            (:mod:`hyperfree.optim.infer`; default: the model's ``dummy_inputs`` if it has
            them, else its first forward is read while it runs); ``init_weights`` also uses it.
        settings: ``infer=False``: kinds from the rules table and ``kinds=`` only, any other
            parameter is one ``ValueError`` listing them all with paste-able declarations;
            ``ns_steps`` (default 5): Newton–Schulz iterations of the spectral family;
            ``sharded_polar``: how the spectral family orthogonalises matrices sharded by
            FSDP2, ``"owner"`` (default: each rank orthogonalises its share of the matrices)
            or ``"gather"`` (every rank all of them), see ``docs/agd-speed.md``. Settings
            ported from other optimisers (``weight_decay``, ``betas``, ``momentum``, ``eps``)
            are refused with one line.

    Behaviour: ``step(closure)`` returns the closure's loss (torch's convention) and stores η
    in every group as ``group["eta"]`` (a 0-dim tensor; also :attr:`eta`). A parameter whose
    ``.grad`` is ``None`` is not moved but counts in ``L``; a zero cell stays put. Non-finite
    gradients skip the whole step (momentum included): on CPU with a ``RuntimeWarning`` naming
    the first offending parameter, on accelerators without a host sync (the warning comes once
    the flag reaches the host). :attr:`skipped_steps` counts them. ``state_dict`` holds every
    piece's state and the counters; deep copies and pickles work. Where a kind did not come
    from the table or a declaration, one :class:`KindsNote` warning says so (at construction,
    or when the first forward has been read); :meth:`kinds_report` lists every parameter's
    kind and why. ``weight_decay`` (other than
    0), ``betas``, ``momentum`` and ``eps`` are refused with one line; an ``lr`` more than 10x
    from 1 warns that it multiplies AGD's own step.
    """

    def __init__(self, params: Any, *, preset: str | Preset = DEFAULT_PRESET, gain: float = 1.0,
                 lr: float = 1.0, model: nn.Module | None = None,
                 kinds: Mapping[Any, str | Kind] | None = None, example: Any = None,
                 **settings: Any):
        refuse_ported({k: v for k, v in settings.items() if k not in SETTINGS})
        settings = {**SETTINGS, **settings}
        check_multiplier("gain", gain)
        check_multiplier("lr", lr)
        if settings["sharded_polar"] not in _distributed.POLAR_SCHEMES:
            raise ValueError(f"AGD sharded_polar must be one of {_distributed.POLAR_SCHEMES}, "
                             f"got {settings['sharded_polar']!r}")
        self.sharded_polar = settings["sharded_polar"]
        owner = params if isinstance(params, nn.Module) else model
        resolution = Resolution(owner, kinds, infer=settings["infer"], example=example) \
            if owner is not None else None
        groups, self._infos = param_groups(params, model, kinds,
                                           resolution.infos if resolution else None)
        self._preset_arg, self._ns_steps_arg = preset, settings["ns_steps"]
        self.preset = with_ns_steps(get_preset(preset), settings["ns_steps"])
        if not any(len(g["params"]) for g in groups):
            raise ValueError("AGD got no trainable parameters: pass a model with at least one "
                             "parameter that requires grad")
        self._init_runtime()
        super().__init__(groups, dict(gain=float(gain), lr=lr))
        warn_lr([g["lr"] for g in self.param_groups])
        pending = resolution is not None and resolution.pending
        if self.L == 0 and not pending:
            raise ValueError("AGD got only parameters of mass 0 (biases), so L = 0 and the step "
                             "is undefined: train at least one weight, gain or embedding with "
                             "AGD, or give the biases to another optimiser")
        self._resolution = resolution
        if self.preset.head and owner is not None:  # hooks the first forward
            self._head = HeadScale(owner, self._infos)
        if self.L:
            self._prepare()
        if resolution is not None and resolution.deferred:  # read the first forward
            resolution.watch(self._adopt)  # (the one line comes then)
        elif resolution is not None and (note := summary(list(self._infos.values()))):
            warnings.warn(note, KindsNote, stacklevel=2)

    def kinds_report(self) -> str:
        """Every parameter AGD steps: its kind, where the kind came from (the rules table, a
        declaration, a reading of the forward, ``generic``) and why; under a preset with
        ``head``, the heads found; then the code that pins what was read or defaulted as
        declarations."""
        text = report(list(self._infos.values()))
        if not self.preset.head:
            return text
        line = self._head.describe() if self._head is not None else HeadScale.UNMEASURED
        table, sep, rest = text.partition("\n\n")
        return table + "\n\n" + line + sep + rest

    def _adopt(self, infos: list[ParamInfo], loaded: bool = False) -> None:
        """New kinds before any step (read from the first forward, or ``loaded`` from a
        state_dict): the groups' kinds, the pieces' state and the plans follow them."""
        if self.steps:
            return
        self._infos.update({id(i.param): i for i in infos})
        for g in self.param_groups:
            g["kinds"] = [dataclasses.astuple(k) for k in (
                self._infos[id(p)].kind if id(p) in self._infos else Kind(*old)
                for p, old in zip(g["params"], g["kinds"]))]
        self._cache = None
        if self.L == 0:
            raise ValueError("AGD got only parameters of mass 0 (biases and generic tensors), "
                             "so L = 0 and the step is undefined: declare a weight's kind")
        self.state, self._pieces = defaultdict(dict), PieceStates(self.preset.slots)
        self._plans.clear()
        self._prepare()
        note = summary(list(self._infos.values())) if not loaded else None
        if note:
            warnings.warn(note, KindsNote, stacklevel=2)

    # ------------------------------------------------------------------ set-up
    def _init_runtime(self) -> None:
        """What is rebuilt, never saved: plans, caches, the collectives, the flag queue."""
        self._plans: OrderedDict[tuple[int, ...], tuple[Plan, Any]] = OrderedDict()
        self._multipliers: dict[tuple, Tensor] = {}
        self._flags = _flags.FlagQueue()
        self._cache: list | None = None  # _entries()
        self._host: bool | None = None   # tests force a finish; None: host on eager CPU
        self._sharded: _distributed.ShardedStep | None = None
        self._evaluating = False  # the model holds the averaged weights (eval())
        self._head: HeadScale | None = None  # preset.head: the head's input scale (_head.py)
        # counters and the pieces' global state: tensors next to the weights, so that a step
        # needs no host sync and torch.compile(opt.step) does not specialise on them
        self._counters: dict[str, Tensor] = {}
        self._pieces = PieceStates(self.preset.slots)

    def _prepare(self) -> None:
        """Counters, the pieces' state and the plan of the full parameter set now, so the first
        step does no set-up work (``torch.compile(opt.step)`` then captures one graph)."""
        params = [p for _, _, p, _ in self._entries()]
        dev = params[0].device
        for name in ("step", "skipped"):
            self._counters.setdefault(name, torch.zeros((), dtype=torch.int64, device=dev))
        self._pieces.prepare(params, self.state)
        if _distributed.is_sharded(params):
            self._sharded = _distributed.ShardedStep([n for _, n, _, _ in self._entries()],
                                                     params, polar=self.sharded_polar)
        self._plan(tuple(range(len(params))))

    def _plan(self, live: tuple[int, ...]) -> tuple[Plan, Any]:
        """The plan of the entries ``live`` (indices into :meth:`_entries`) and the sharded
        Newton–Schulz bound to it; the last :data:`_PLANS` are kept."""
        if live in self._plans:
            self._plans.move_to_end(live)
            return self._plans[live]
        chosen = [self._entries()[j] for j in live]
        sh = self._sharded
        rows = [sh.rows[j] for j in live] if sh is not None else None
        plan = build_plan([local(p) for _, _, p, _ in chosen], [k for _, _, _, k in chosen],
                          self.preset.family, shapes=[tuple(p.shape) for _, _, p, _ in chosen],
                          rows=rows, L=self.L, forks=self.preset.forks,
                          streams=self.preset.streams)
        polar = sh.polar_for(plan, rows) if sh is not None and plan.polar else None
        self._plans[live] = (plan, polar)
        if len(self._plans) > _PLANS:
            self._plans.popitem(last=False)
        return plan, polar

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()  # plans, caches and collectives are rebuilt on load
        state.update(preset=self.preset, sharded_polar=self.sharded_polar,
                     _counters={k: v.clone() for k, v in self._counters.items()},
                     _pieces=self._pieces.saved(), _evaluating=self._evaluating,
                     _infos=list(self._infos.values()),  # padding_idx etc. for init_weights
                     _head=self._head)  # its hooks are on the model: copied with it, they feed it
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        counters, pieces = state.pop("_counters", {}), state.pop("_pieces", {})
        infos, evaluating = state.pop("_infos", None), state.pop("_evaluating", False)
        # torch's load_state_dict calls this too, with neither: keep this optimiser's own
        head = state.pop("_head", getattr(self, "_head", None))
        super().__setstate__(state)
        if infos is not None or not hasattr(self, "_infos"):
            self._infos = {id(i.param): i for i in infos or []}  # the copied parameters' ids
        self._init_runtime()
        self._head = head
        if head is not None:
            head._infos = self._infos
        self._counters = dict(counters)
        self._pieces.fields = {s: dict(d) for s, d in pieces.items()}
        self._prepare()
        self._evaluating = evaluating

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(checked_group(param_group, self._infos, self.defaults))
        self._plans.clear()
        self._cache = None
        if hasattr(self, "_counters") and self._counters:  # after construction
            self._prepare()

    # ------------------------------------------------------------------ bookkeeping
    def _entries(self) -> list[tuple[dict[str, Any], str, Tensor, Kind]]:
        """``(group, name, param, kind)`` of every parameter (cached until the groups change)."""
        if self._cache is None:
            self._cache = [(g, n, p, Kind(*k)) for g in self.param_groups
                           for n, p, k in zip(g["param_names"], g["params"], g["kinds"])]
        return self._cache

    @property
    def ns_steps(self) -> int:
        """Newton–Schulz iterations of the spectral family (0 for the Frobenius family)."""
        return self.preset.family.ns_steps

    @property
    def L(self) -> int:
        """``L = Σ mass`` over every parameter of every group."""
        return sum(rule_of(k).mass(p.shape, k) for _, _, p, k in self._entries())

    @property
    def eta(self) -> Tensor:
        """η of the last step (a 0-dim tensor on the parameters' device; 0 before any)."""
        return self.param_groups[0]["eta"]

    @property
    def skipped_steps(self) -> int:
        """Steps skipped because of non-finite gradients (reading it may wait for the device)."""
        self._flags.drain(block=True)
        return int(self._counters["skipped"])

    @property
    def steps(self) -> int:
        """Steps taken (skipped ones included)."""
        return int(self._counters["step"])

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
            if info is not None and info.origin not in INIT_ORIGINS:
                continue  # read or generic: the model's own values (docs/agd-rules.md §4)
            pad = info.padding_idx if info is not None else None
            if self._sharded is None:
                rule_of(kind).init_(p, kind, generator, pad)
            else:  # the whole tensor on every rank (seeded alike), then this rank's rows
                _distributed.init_rows_(p, self._sharded.rows[j], kind, generator, pad)
        resolution = getattr(self, "_resolution", None)
        if self._sharded is None and resolution is not None:
            warn_uncalibrated(resolution.calibrate(list(self._infos.values())))

    # ------------------------------------------------------------------ the step
    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        """One AGD update from the current ``.grad``; returns the closure's loss (or None)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        entries = self._entries()
        live = tuple(j for j, (_, _, p, _) in enumerate(entries) if p.grad is not None)
        if not live:
            return loss
        if self._evaluating:
            raise RuntimeError("AGD.step() while the model holds the averaged weights (after "
                               "AGD.eval()): call AGD.train() before the forward pass whose "
                               "gradients you step with")
        grads = [entries[j][2].grad for j in live]
        for j, g in zip(live, grads):
            if g.is_sparse:
                raise ValueError(f"AGD does not support sparse gradients (parameter "
                                 f"{entries[j][1]!r}); build the embedding with sparse=False")
        compiling = torch.compiler.is_compiling()
        resolution = getattr(self, "_resolution", None)
        if resolution is not None and resolution.deferred and not compiling:
            generic, note = resolution.missed(self._infos)
            self._infos.update(generic)
            if note:
                warnings.warn(note, stacklevel=4)  # step()'s caller
        self._counters["step"].add_(1)
        host = not compiling and grads[0].device.type == "cpu" if self._host is None \
            else self._host
        if not host and not compiling:
            self._flags.drain(block=False)
        eta, ok = self._update(live, grads, host)
        if self.preset.average is not None and (not host or ok):
            params = [p for _, _, p, _ in entries]  # every parameter: x follows W
            self.preset.average.update(self._pieces.of(params, self.state)["average"],
                                       [local(p) for p in params], ok)
        for g in self.param_groups:
            g["eta"] = eta
        if host:
            if not ok:
                self._counters["skipped"].add_(1)
                _flags.warn_nonfinite(_flags.first_nonfinite([entries[j][1] for j in live],
                                                             grads), stacklevel=3)
        else:
            self._counters["skipped"].add_((~ok).to(torch.int64))
            if not compiling:
                self._flags.record(ok, [entries[j][1] for j in live])
        return loss

    def _update(self, live: tuple[int, ...], grads: list[Tensor], host: bool) -> tuple[Any, Any]:
        """The step of the parameters ``live`` by :func:`~hyperfree.optim.functional.agd`."""
        chosen = [self._entries()[j] for j in live]
        params = [p for _, _, p, _ in chosen]
        plan, polar = self._plan(live)
        sh = self._sharded
        multipliers = gain_lr(chosen, plan, self._multipliers)
        heads = self._head.factors(plan.L) if self._head is not None else []
        at = [(i, f) for w, f in heads for i, p in enumerate(params) if p is w]
        if at:  # preset.head: each head's step × 1/ρ (_head.py)
            acc = plan.consts.sq_w
            multipliers = head_multipliers(multipliers, len(params), at, acc.dtype, acc.device)
        return agd([local(p) for p in params], [local(g) for g in grads],
                   self._pieces.of(params, self.state),
                   plan=plan, preset=self.preset, multipliers=multipliers,
                   host=host, shards=Shards(sh.reduce, polar) if sh is not None else None)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        self._flags.drain(block=True)
        sd["agd"] = {"steps": self.steps, "skipped_steps": self.skipped_steps,
                     "preset": self.preset.name, "definition": self.preset.definition,
                     "state": self._pieces.saved(),
                     "evaluating": self._evaluating}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        saved = dict(state_dict.pop("agd", {"steps": 0, "skipped_steps": 0}))
        name = saved.get("preset", self.preset.name)
        if name != self.preset.name:
            raise ValueError(f"this AGD state was saved with preset {name!r}, not "
                             f"{self.preset.name!r}; build AGD(..., preset={name!r}) to resume")
        changed = redefinition(saved.get("definition"), self.preset)
        if changed:  # a library upgrade changed the preset since the state was saved
            warnings.warn(f"this AGD state was saved when preset {name!r} was defined otherwise "
                          f"({changed}); it resumes under the current definition, so the run "
                          "will not equal one never stopped; to resume it exactly, pass "
                          f"AGD(..., preset=Preset({name!r}, ...)) with the saved pieces",
                          stacklevel=2)
        resolution = getattr(self, "_resolution", None)
        if resolution is not None and resolution.deferred:  # the saved kinds were read already
            resolution.close()
            self._adopt(loaded_kinds(self.param_groups, state_dict, self._infos), loaded=True)
        for g_new, g_old in zip(self.param_groups, state_dict.get("param_groups", [])):
            old = [Kind(*k) for k in g_old.get("kinds", g_new["kinds"])]  # 3-tuples: share 1
            if old != [Kind(*k) for k in g_new["kinds"]]:
                raise ValueError("this AGD state was saved for parameters of other kinds "
                                 f"({old} vs {g_new['kinds']}); load it into the same model")
        super().load_state_dict(state_dict)
        for g in self.param_groups:
            g["kinds"] = [dataclasses.astuple(Kind(*k)) for k in g["kinds"]]
        self._cache = None
        self._counters["step"].fill_(int(saved["steps"]))
        self._counters["skipped"].fill_(int(saved["skipped_steps"]))
        self._pieces.load(saved)
        self._evaluating = bool(saved.get("evaluating", False))
        self._flags.clear()
