"""The kinds of an optimiser's parameters: the table and declarations, then one forward read.

:class:`Resolution` is what ``AGD(model)`` builds first (``docs/agd-rules.md`` §4):

1. :func:`~.kinds.classify` with the rules table and ``kinds=`` (the fast path);
2. one forward is read (:mod:`.infer`) for what no table can say — the kind of an unknown
   parameter, the packing of an ambiguous matrix, the forks of every tensor: an ``example``
   input the user passes, or the model's own ``dummy_inputs`` (Hugging Face models have them),
   read now with the RNG and the buffers restored afterwards; without either (or if the model
   does not take it), or with sharded (FSDP2) parameters, the model's FIRST forward is read
   while it runs (the kinds are settled before the first ``step``; until then an unknown
   parameter is ``generic`` and no tensor has forks);
3. what the reading does not decide is ``generic``.

With ``infer=False`` step 2 never runs: unknown parameters are one ``ValueError`` listing them
all with paste-able declarations (suggestions read from an example when there is one).
"""
from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules import module as _module

from ._declare import undeclared_error
from .infer import Reader, Reading, decide, kind_of, read_forward, refine
from .kinds import KIND_NAMES, Kind, ParamInfo, classify

__all__ = ["Resolution", "KindsNote", "loaded_kinds"]


class KindsNote(UserWarning):
    """AGD's one line about kinds that did not come from the rules table (or a declaration)."""


def _dummy(model: nn.Module) -> Any:
    """The model's own example input (``dummy_inputs``, a Hugging Face convention), moved to
    its parameters' device; None if it has none."""
    try:
        dummy = getattr(model, "dummy_inputs", None)
    except Exception:
        return None
    if not isinstance(dummy, Mapping) or not all(isinstance(v, Tensor) for v in dummy.values()):
        return None
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    return {k: v.to(dev) for k, v in dummy.items()}


class Resolution:
    """Every parameter's kind and where it came from (module docstring)."""

    def __init__(self, model: nn.Module, declared: Mapping[Any, str | Kind] | None, *,
                 infer: bool = True, example: Any = None) -> None:
        self.infos = classify(model, declared, unknown="keep")
        self._model = weakref.ref(model)
        self._example = example if example is not None else _dummy(model)
        self._hooks: list[Any] = []
        self._settle: Callable[[list[ParamInfo]], None] | None = None
        self._active: Reader | None = None
        self.failed: str | None = None  # why the example could not be read
        self.deferred = False  # the model's first forward is to be read
        self._unread = False  # a forward ran that could not be read (compiled)
        unknown = [i for i in self.infos if i.kind is None]
        if not infer:
            if unknown:
                raise undeclared_error(unknown, KIND_NAMES, self._suggestions(unknown),
                                       self.infos)
            return
        # every kind is read, if only for its forks; sharded (FSDP2) parameters while the
        # first forward runs, where each unit's parameters are gathered whole
        sharded = any(hasattr(i.param, "_local_tensor") for i in self.infos)
        if self._example is not None and not sharded:
            try:
                self.apply(*read_forward(model, self._example, self.params, self.tied))
                return
            except Exception as e:  # an example the model does not take: read the first batch
                self.failed = f"{type(e).__name__}: {e}"
        why = "generic until the model's first forward is read" + (
            f" (its example failed: {self.failed})" if self.failed else "")
        self._default(why, pending=True)
        self.deferred = True

    # ------------------------------------------------------------ state
    @property
    def params(self) -> list[Tensor]:
        return [i.param for i in self.infos]

    @property
    def tied(self) -> tuple[int, ...]:
        """Parameters with more than one role (a tied embedding and head)."""
        return tuple(j for j, i in enumerate(self.infos) if len(set(i.roles)) > 1)

    @property
    def pending(self) -> bool:
        return any(i.origin == "pending" for i in self.infos)

    def _suggestions(self, unknown: list[ParamInfo]) -> dict[int, tuple[Kind, str]]:
        model = self._model()
        if self._example is None or model is None:
            return {}
        try:
            readings, _ = read_forward(model, self._example, self.params)
        except Exception:
            return {}
        out = {}
        for info, reading in zip(self.infos, readings):
            kind, why = kind_of(reading, tuple(info.param.shape))
            out[id(info.param)] = (kind or Kind("generic"), f"read from the forward: {why}")
        return {id(i.param): out[id(i.param)] for i in unknown}

    def _default(self, why: str, pending: bool = False) -> None:
        """Every unknown parameter ``generic`` (for now, when ``pending``)."""
        self.infos = [dataclasses.replace(i, kind=Kind("generic"), reason=why or i.reason,
                                          origin="pending" if pending else "generic")
                      if i.kind is None else i for i in self.infos]

    def apply(self, readings: list[Reading], error: str | None) -> None:
        """Kinds from ``readings`` (one per :attr:`params`) for the parameters that were
        unknown (or pending) and the packing of single-block table matrices and biases."""
        out = []
        for info, reading in zip(self.infos, readings):
            shape = tuple(info.param.shape)
            if info.origin in ("pending", "generic") or info.kind is None:
                kind, why = decide(reading, shape)
                if error is not None and kind is None:
                    why = f"{why} (the reading stopped early: {error})"
                info = dataclasses.replace(
                    info, kind=kind or Kind("generic"), origin="inferred" if kind else "generic",
                    reason=why, roles=tuple(u.kind for u in reading.uses) if kind else info.roles)
            used_as = {u.kind for u in reading.uses if u.kind is not None}
            if info.origin == "table" and len(used_as | set(info.roles)) > 1:
                info = dataclasses.replace(info, roles=(*info.roles, *sorted(
                    used_as - set(info.roles), key=str)))  # also used as a head (tied)
            if info.origin in ("table", "inferred", "generic"):  # a declaration stands as given
                table = info.origin == "table"
                for step, kind, note in refine(info.kind, reading, shape):
                    packs = step == "packed" and table
                    reason = f"the table's {info.kind}" if packs else info.reason
                    info = dataclasses.replace(info, kind=kind, reason=f"{reason}; {note}",
                                               origin="packed" if packs else info.origin)
            out.append(info)
        self.infos = out

    def calibrate(self, infos: list[ParamInfo]) -> list[str]:
        """After AGD's init: rescale every tied table (an embedding that is also the output
        head) for unit-scale logits, reading one forward of the example for the RMS of the
        head's input (:meth:`~.rules.KindRule.calibrate_`). Returns the names of the tied
        tables it could not calibrate (no example to read)."""
        tied = [j for j, i in enumerate(infos) if len(set(i.roles)) > 1]
        model = self._model()
        if not tied:
            return []
        if self._example is None or model is None:
            return [infos[j].name for j in tied]
        readings, _ = read_forward(model, self._example, [i.param for i in infos], tuple(tied))
        for j in tied:
            info, rms = infos[j], readings[j].input_rms
            if rms is not None:
                with torch.no_grad():
                    info.kind.rule.calibrate_(info.param, info.kind, rms, info.padding_idx)
        return []

    # ------------------------------------------------------------ the first forward
    def watch(self, settle: Callable[[list[ParamInfo]], None]) -> None:
        """Read the model's first forward while it runs, then call ``settle(infos)``
        (``settle`` is held weakly: a method of an optimiser that may be gone by then)."""
        self._settle = weakref.WeakMethod(settle)  # type: ignore[assignment]
        model = self._model()
        self._prefix = {id(m): p for p, m in model.named_modules()} if model is not None else {}
        self._by_name = {i.name: j for j, i in enumerate(self.infos)}
        self._hooks = [_module.register_module_forward_pre_hook(self._pre),
                       _module.register_module_forward_hook(self._post, always_call=True)]

    def close(self) -> None:
        """Stop watching (the kinds are settled, or were loaded from a state_dict)."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
        self.deferred = False
        if self._active is not None:
            self._active.__exit__(None, None, None)
            self._active = None

    def _pre(self, module: nn.Module, args: Any) -> None:
        if self._active is not None:
            return self._alias(module)
        model = self._model()
        settle = self._settle() if self._settle is not None else None
        if model is None or settle is None:
            return self.close()  # the model or the optimiser is gone: stop watching
        if module is not model:
            if getattr(module, "_orig_mod", None) is model:
                self._read_compiled(model, args, settle)  # the wrapper torch.compile(model)
            return
        if torch.compiler.is_compiling():  # model.compile(): dynamo is tracing this hook
            self._unread = True
            return
        self._active = Reader(self.params, self.tied)
        self._active.__enter__()
        self._alias(module)

    def _read_compiled(self, model: nn.Module, args: Any,
                       settle: Callable[[list[ParamInfo]], None]) -> None:
        """The wrapper ``torch.compile(model)`` is being called (eagerly: its hooks run before
        dynamo): read one side-effect-free eager forward of ``model`` on the same positional
        arguments (dynamo would trace the reader), then settle. Keyword arguments do not reach
        a global hook; without positional ones nothing is read (the first step says so)."""
        if not args or torch.compiler.is_compiling():
            self._unread = True
            return
        self.close()  # before the eager forward: its own hooks must not start a second reading
        try:
            self.apply(*read_forward(model, tuple(args), self.params, self.tied))
        except Exception as e:  # the forward will raise it again, in the user's call
            self.failed, self._unread = f"{type(e).__name__}: {e}", True
            return
        settle(self.infos)

    def missed(self, infos: dict[int, ParamInfo]) -> tuple[dict[int, ParamInfo], str | None]:
        """At the first step, with the first forward still to be read: stop watching. Returns
        the pending kinds of ``infos`` (AGD's, by parameter id) made generic for good, to
        adopt, and what to warn when a forward ran that could not be read (None when none
        ran: gradients set by hand)."""
        self.close()
        why = "generic: the model's forward was not read before the first step"
        generic = {k: dataclasses.replace(i, origin="generic", reason=why)
                   for k, i in infos.items() if i.origin == "pending"}
        if not self._unread:
            return generic, None
        return generic, (
            "AGD could not read the model's forward before its first step (it ran "
            "compiled: model.compile(), or torch.compile(model) called with keyword "
            "arguments only): parameters of no table kind stay generic and residual forks "
            "are not counted; pass an input, AGD(model, example=batch), to read it at "
            "construction")

    def _alias(self, module: nn.Module) -> None:
        """The tensors ``module`` (and its children: ``nn.MultiheadAttention`` reads its
        ``out_proj`` directly) holds now under its parameters' names: FSDP2 swaps in each unit's
        gathered (unsharded) parameters before its forward; otherwise they are the same."""
        prefix = self._prefix.get(id(module))
        if prefix is None or self._active is None:
            return
        for name, t in module.named_parameters(prefix=prefix, remove_duplicate=False):
            j = self._by_name.get(name)
            if j is not None:
                self._active.alias(t, j)

    def _post(self, module: nn.Module, args: Any, output: Any) -> None:
        if module is not self._model() or self._active is None:
            return
        reader, self._active = self._active, None
        reader.__exit__(None, None, None)
        if output is None:  # the forward raised: read the next one
            return
        self.close()
        settle = self._settle() if self._settle is not None else None
        if settle is not None:
            self.apply(reader.readings(), reader.error)
            settle(self.infos)


def loaded_kinds(groups: list[dict[str, Any]], state_dict: dict[str, Any],
            infos: dict[int, ParamInfo]) -> list[ParamInfo]:
    """The kinds a state_dict was saved with, for the parameters whose reading is still to
    come: the pending ones, and the packing of single-block table kinds."""
    out = []
    for g_new, g_old in zip(groups, state_dict.get("param_groups", [])):
        for p, k in zip(g_new["params"], g_old.get("kinds", g_new["kinds"])):
            info, kind = infos.get(id(p)), Kind(*k)
            if info is None or kind == info.kind:
                continue
            packing = (info.origin == "table" and kind.name == info.kind.name
                       and info.kind.rule.packed(info.kind, 2, 1) is not None)
            graph = dataclasses.replace(kind, share=1, forks=0, terms=0) == dataclasses.replace(
                info.kind, share=1, forks=0, terms=0)  # what only a reading tells
            if info.origin == "pending" or packing or graph:
                out.append(dataclasses.replace(info, kind=kind, reason="loaded from a state_dict",
                                               origin="packed" if packing else "inferred"))
    return out
