"""Parameter kinds: what each trainable tensor *is*, decided by the module that owns it.

AGD's update depends on what a tensor is, not on its shape: an ``nn.Embedding`` table and a
``Linear`` weight are both 2-D, and the packed ``(3d, d)`` Q/K/V projection of
``nn.MultiheadAttention`` is three matrices, not one. So every parameter gets a :class:`Kind`
from a table of rules keyed by the *type of the module that owns it* (its direct parent), never
by its name elsewhere in the model or its shape:

.. code-block:: text

    owner type (or a base class of it)   parameter name    kind
    nn.Linear                            weight            linear
                                         bias              bias
    nn.Conv1d / 2d / 3d                  weight            conv(groups)
    nn.ConvTranspose1d / 2d / 3d         weight            conv_transpose(groups)
    nn.Embedding, nn.EmbeddingBag        weight            embedding
    LayerNorm, RMSNorm, BatchNorm*,      weight            gain
      GroupNorm, InstanceNorm*           bias              bias
    nn.MultiheadAttention                in_proj_weight    linear x 3 (Q, K, V)
                                         in_proj_bias      bias x 3
                                         q/k/v_proj_weight linear;   bias_k, bias_v  bias
    nn.RNN / nn.LSTM / nn.GRU            weight_ih_l*      linear x gates (1 / 4 / 3)
                                         weight_hh_l*      linear x gates
                                         weight_hr_l*      linear (LSTM projection)
                                         bias_ih_l*, bias_hh_l*   bias x gates
    "transformers...Conv1D" (by path)    weight            linear_in_out (stored (in, out))
                                         bias              bias

The table is data (:data:`RULES`); the rule of each kind (its norm, target scale, init and
weight in ``L``) is in :mod:`hyperfree.optim.rules` and ``docs/agd-rules.md``. A module type is
looked up through its method resolution order, so a subclass (``NonDynamicallyQuantizableLinear``,
``SyncBatchNorm``, a user's ``MyLinear(nn.Linear)``) inherits its base's rules. Types can also
be named by their import path as a string, so a layer from a package we do not import (the
Hugging Face ``Conv1D``) is recognised without importing it.

Names are never guessed. A parameter that no entry covers is *unknown* here: ``AGD`` reads its
kind from how one forward uses it (:mod:`hyperfree.optim.infer`), and what no reading decides
is ``generic`` (``docs/agd-rules.md`` §4). Strictly (``classify(model)``, ``AGD(model,
infer=False)``) unknown parameters are one ``ValueError`` that lists every one of them, with
its owner's import path, a suggested kind and paste-able declarations — once per module type
with :func:`register_kinds` (by class, import path or unambiguous class name), or per
parameter with ``AGD(model, kinds={"name": "gain"})``.

A parameter reached through two modules (weight tying, e.g. an embedding shared with the output
head) is one parameter: it is listed once, with every owner, and updated once. When its owners
disagree, :data:`TIE_RESOLUTION` says which kind wins (the embedding's, for a tied embedding and
linear head: see ``docs/agd-rules.md``). An owner with no entry does not disagree: BERT's
``cls.predictions.bias`` is the ``bias`` of the ``Linear`` it is tied to. Any other
disagreement is unknown (strictly: an error asking for a declaration).
"""
from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Union

from torch import Tensor, nn

from ._declare import undeclared_error
from .rules import KIND_NAMES, Kind, as_kind

__all__ = ["KIND_NAMES", "Kind", "KindSpec", "ParamInfo", "RULES",
           "TIE_RESOLUTION", "ORIGINS", "INIT_ORIGINS", "as_kind", "register_kinds",
           "kinds_for", "classify", "type_path", "resolve_tie"]

#: What a rules table entry may hold: a kind name, a :class:`Kind`, or a function of the owning
#: module returning one (for kinds that read the module, e.g. a conv's ``groups``).
KindSpec = Union[str, Kind, Callable[[nn.Module], Union[str, Kind]]]


def _conv(m: nn.Module) -> Kind:
    return Kind("conv", groups=int(getattr(m, "groups", 1)))


def _conv_transpose(m: nn.Module) -> Kind:
    return Kind("conv_transpose", groups=int(getattr(m, "groups", 1)))


def _rnn_gates(m: nn.Module) -> int:
    mode = getattr(m, "mode", "RNN_TANH")
    return {"LSTM": 4, "GRU": 3}.get(mode, 1)


def _rnn_linear(m: nn.Module) -> Kind:
    """An input or recurrent matrix: its gates are blocks, and it shares its layer's mass with
    the other (``W_ih x + W_hh h`` is one layer acting on ``[x; h]``)."""
    return Kind("linear", blocks=_rnn_gates(m), share=2)


def _rnn_bias(m: nn.Module) -> Kind:
    return Kind("bias", blocks=_rnn_gates(m))


_NORM = {"weight": "gain", "bias": "bias"}

#: The rules table: owner module type (or its import path) -> {parameter name pattern: kind}.
#: Patterns use ``fnmatch`` syntax (``weight_ih_l*`` matches every layer and direction).
RULES: dict[type | str, dict[str, KindSpec]] = {
    nn.Linear: {"weight": "linear", "bias": "bias"},
    nn.Bilinear: {},  # (out, in1, in2): no rule yet; its parameters raise the ValueError
    nn.modules.conv._ConvNd: {"weight": _conv, "bias": "bias"},
    nn.modules.conv._ConvTransposeNd: {"weight": _conv_transpose, "bias": "bias"},
    nn.Embedding: {"weight": "embedding"},
    nn.EmbeddingBag: {"weight": "embedding"},
    nn.LayerNorm: dict(_NORM),
    nn.GroupNorm: dict(_NORM),
    nn.modules.batchnorm._NormBase: dict(_NORM),  # BatchNorm*, SyncBatchNorm, InstanceNorm*
    nn.MultiheadAttention: {"in_proj_weight": Kind("linear", blocks=3),
                            "in_proj_bias": Kind("bias", blocks=3),
                            "q_proj_weight": "linear", "k_proj_weight": "linear",
                            "v_proj_weight": "linear", "bias_k": "bias", "bias_v": "bias"},
    nn.modules.rnn.RNNBase: {"weight_ih_l*": _rnn_linear, "weight_hh_l*": _rnn_linear,
                             "weight_hr_l*": "linear", "bias_ih_l*": _rnn_bias,
                             "bias_hh_l*": _rnn_bias},
    # Hugging Face GPT-2's Conv1D stores its matrix as (in, out); recognised by import path.
    "transformers.pytorch_utils.Conv1D": {"weight": "linear_in_out", "bias": "bias"},
    "transformers.modeling_utils.Conv1D": {"weight": "linear_in_out", "bias": "bias"},
}
if hasattr(nn, "RMSNorm"):
    RULES[nn.RMSNorm] = {"weight": "gain"}


#: How a tied parameter's kind is chosen when its owners disagree: {set of kinds: winner}.
TIE_RESOLUTION: dict[frozenset[str], str] = {
    frozenset({"embedding", "linear"}): "embedding",
}


def register_kinds(module_type: type | str, kinds: Mapping[str, KindSpec]) -> None:
    """Declare the kinds of a module type's own parameters, once for every instance.

    ``module_type`` is a class (subclasses inherit the entry), its import path
    ``"package.module.Class"``, or its bare class name ``"LlamaRMSNorm"`` (matched by name
    wherever no class or path entry applies; a model in which the name means two classes is a
    ``ValueError`` asking for the class or its path). ``kinds`` maps parameter names (or
    ``fnmatch`` patterns) to a kind name, a :class:`Kind` or ``f(module) -> kind``.
    Re-registering a type replaces its entry. Example:
    ``register_kinds(ScaleShift, {"scale": "gain", "shift": "bias"})``.
    """
    if isinstance(module_type, str):
        parts = module_type.split(".")
        if not all(part.isidentifier() for part in parts):
            raise ValueError(f"register_kinds needs a module class, 'package.module.Class' or a "
                             f"class name, got {module_type!r}")
    elif not isinstance(module_type, type):
        raise ValueError(f"register_kinds needs a module class, 'package.module.Class' or a "
                         f"class name, got {module_type!r}")
    table: dict[str, KindSpec] = {}
    for name, spec in dict(kinds).items():
        if not callable(spec):
            spec = as_kind(spec)
        table[str(name)] = spec
    RULES[module_type] = table


def type_path(cls: type) -> str:
    """``package.module.Class``: how a class is named in messages and declarations."""
    return f"{cls.__module__}.{cls.__qualname__}"


def _entry(module: nn.Module) -> tuple[dict[str, KindSpec] | None, type | None]:
    """The rules entry of ``module``'s type along its MRO (class, then import path, then bare
    class name) and, when a bare name matched, the class it matched."""
    for cls in type(module).__mro__:
        if cls in RULES:
            return RULES[cls], None
        path = type_path(cls)
        if path in RULES:
            return RULES[path], None
        if cls.__name__ in RULES:
            return RULES[cls.__name__], cls
    return None, None


def kinds_for(module: nn.Module) -> dict[str, KindSpec] | None:
    """The rules entry of ``module``'s type, searched along its MRO; None if it has none."""
    return _entry(module)[0]


def _lookup(table: Mapping[str, KindSpec], local: str, module: nn.Module) -> Kind | None:
    spec = table.get(local)
    if spec is None:
        spec = next((v for k, v in table.items() if fnmatch.fnmatchcase(local, k)), None)
    if spec is None:
        return None
    return as_kind(spec(module) if callable(spec) and not isinstance(spec, Kind) else spec)


#: Where a parameter's kind came from (``ParamInfo.origin``): the rules table (tie resolution
#: included), the user's ``kinds=``, the table's kind with its packing read from the forward,
#: a reading of the forward, the ``generic`` rule for what no reading decides, or ``pending``
#: (``generic`` until the first forward is read). AGD's init follows the rule of the first
#: three; the others keep the model's own values.
ORIGINS: tuple[str, ...] = ("table", "declared", "packed", "inferred", "generic", "pending")
#: The origins whose parameters ``init_weights`` initialises by their kind's rule.
INIT_ORIGINS: frozenset[str] = frozenset({"table", "declared", "packed"})


@dataclasses.dataclass(frozen=True)
class ParamInfo:
    """One trainable parameter: its first ``name``, the tensor, its :class:`Kind` (None while
    unknown), the ``owners`` (type names) it is reached through, the ``names`` of every path to
    it, where its kind came from (:data:`ORIGINS`) and why, each owner's import path
    (``package.module.Class``) and the parameter's local name in it, and the kinds its owners'
    entries give (several for a tied parameter)."""

    name: str
    param: Tensor
    kind: Kind | None
    owners: tuple[str, ...]
    names: tuple[str, ...]
    padding_idx: int | None = None  # an embedding's row that stays zero
    origin: str = "table"
    reason: str = ""
    owner_paths: tuple[str, ...] = ()
    locals: tuple[str, ...] = ()
    roles: tuple[Kind, ...] = ()


def classify(model: nn.Module, declared: Mapping[Any, str | Kind] | None = None, *,
             unknown: str = "raise") -> list[ParamInfo]:
    """Every trainable parameter of ``model`` (each tensor once) with its kind.

    ``declared`` maps a parameter's name (any of its names when tied) or the parameter itself
    to a kind; it overrides the rules table. A parameter no rule covers (or a tied parameter
    whose owners' kinds conflict) is *unknown*: ``unknown="raise"`` (the default) raises one
    ``ValueError`` listing every unknown parameter with paste-able declarations;
    ``unknown="keep"`` returns it with ``kind=None`` for the caller to decide.
    """
    if unknown not in ("raise", "keep"):
        raise ValueError(f"classify: unknown must be 'raise' or 'keep', got {unknown!r}")
    declared = dict(declared or {})
    by_id, order = _owners(model)
    known = {n for e in by_id.values() for n in e["names"]}
    for key in declared:
        if isinstance(key, str) and key not in known:
            raise ValueError(f"kinds declares {key!r} but the model has no trainable parameter "
                             "of that name")
    infos = [_resolve(by_id[i], declared) for i in order]
    if unknown == "raise" and any(i.kind is None for i in infos):
        raise undeclared_error([i for i in infos if i.kind is None], KIND_NAMES, None, infos)
    return infos


def _owners(model: nn.Module) -> tuple[dict[int, dict[str, Any]], list[int]]:
    """Every trainable parameter (by id, in order) with its names, owners, their import paths,
    its local names and the kind each owner's entry gives (None: no entry). A bare class name
    registered for two classes of the model is a ``ValueError``."""
    by_id: dict[int, dict[str, Any]] = {}
    order: list[int] = []
    by_bare_name: dict[str, set[type]] = {}
    for mod_name, module in model.named_modules(remove_duplicate=False):
        own = [(n, p) for n, p in module.named_parameters(recurse=False)
               if p is not None and p.requires_grad]
        if not own:
            continue
        table, bare = _entry(module)
        if bare is not None:
            by_bare_name.setdefault(bare.__name__, set()).add(bare)
        for local, p in own:
            name = f"{mod_name}.{local}" if mod_name else local
            entry = by_id.get(id(p))
            if entry is None:
                entry = by_id[id(p)] = {"param": p, "names": [], "owners": [], "kinds": [],
                                        "paths": [], "locals": []}
                order.append(id(p))
            if name in entry["names"]:
                continue
            entry["names"].append(name)
            entry["owners"].append(type(module).__name__)
            entry["paths"].append(type_path(type(module)))
            entry["locals"].append(local)
            kind = _lookup(table, local, module) if table is not None else None
            entry["kinds"].append(kind)
            if kind is not None and kind.rule.has_padding_row:
                entry["padding_idx"] = getattr(module, "padding_idx", None)
    for bare_name, classes in by_bare_name.items():
        if len(classes) > 1:
            paths = " and ".join(sorted(type_path(c) for c in classes))
            raise ValueError(f"register_kinds({bare_name!r}, ...) names two classes in this "
                             f"model, {paths}: register the class itself or its import path")
    return by_id, order


def resolve_tie(kinds: Iterable[Kind]) -> Kind | None:
    """The one kind of a parameter its users give ``kinds``: the common kind, the winner of
    :data:`TIE_RESOLUTION`, or None when they conflict."""
    distinct = set(kinds)
    if len(distinct) == 1:
        return next(iter(distinct))
    winner = TIE_RESOLUTION.get(frozenset(k.name for k in distinct))
    return next((k for k in distinct if k.name == winner), None)


def _resolve(entry: dict[str, Any], declared: Mapping[Any, str | Kind]) -> ParamInfo:
    p, names = entry["param"], tuple(entry["names"])
    roles = tuple(k for k in entry["kinds"] if k is not None)
    common = dict(owners=tuple(entry["owners"]), names=names, owner_paths=tuple(entry["paths"]),
                  locals=tuple(entry["locals"]), roles=roles)
    chosen = next((declared[k] for k in (p, *names) if _has(declared, k)), None)
    if chosen is not None:
        kind, origin, reason = as_kind(chosen), "declared", "declared with kinds="
    elif not roles:
        kind, origin, reason = None, "table", "its owner's type has no entry in the rules table"
    else:
        kind, origin = resolve_tie(roles), "table"
        if kind is None:
            reason = (f"tied parameter {names[0]!r} is a "
                      f"{' and a '.join(sorted({str(k) for k in roles}))} through "
                      f"{', '.join(names)}")
        elif len(roles) < len(names):
            reason = f"tied to a {kind} of the table (its other owners have no entry)"
        elif len(set(roles)) > 1:
            reason = f"tied: {' and '.join(sorted({str(k) for k in roles}))}; the {kind} wins"
        else:
            reason = "rules table"
    pad = entry.get("padding_idx") if kind is not None and kind.rule.has_padding_row else None
    return ParamInfo(names[0], p, kind, padding_idx=pad, origin=origin, reason=reason, **common)


def _has(declared: Mapping[Any, Any], key: Any) -> bool:
    try:
        return key in declared
    except (TypeError, RuntimeError):  # a Tensor key compared with a str key
        return any(k is key for k in declared)
