"""The model registry: every architecture the harness offers, built by name (timm style).

A family module registers one *builder* per variant with :func:`register_model`; the single entry
point :func:`create_model` validates the user's flags, fills in the variant's defaults and calls
the builder. A builder receives ``in_channels``, ``num_classes`` and ``image_size`` as keywords,
plus each architecture flag of :data:`MODEL_FLAGS` (``depth``, ``width``, ``heads``, ``seq_len``,
``tie_weights``) only when the variant uses it (declared by giving a default at registration), so
a builder's signature says exactly which flags it honours. :func:`resolve_flags` does the
validation and defaulting alone (the harness uses it to size text windows before it builds).

``paper_exact=True`` means the model has only 2-D (Linear) and 4-D (Conv2d) parameters — no
biases, no norm gains — so AGD's paper-exact mode (SPEC §1.1) accepts it as is.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Literal

from torch import nn

from hyperfree._registry import Registry

__all__ = ["Builder", "InputKind", "ModelInfo", "MODEL_FLAGS", "register_model", "get_model_info",
           "list_models", "resolve_flags", "create_model"]

InputKind = Literal["image", "tokens"]
Builder = Callable[..., nn.Module]
_INPUT_KINDS: tuple[str, ...] = ("image", "tokens")
# The architecture flags a builder may declare (CLI: --depth --width --heads --seq-len
# --tie-weights). ``seq_len`` is the context length T of a token model: its training windows.
MODEL_FLAGS: tuple[str, ...] = ("depth", "width", "heads", "seq_len", "tie_weights")


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """A registered model: its builder and what the CLI says about it.

    Each ``default_<flag>`` is ``None`` when the model has no such flag; giving that flag to
    :func:`create_model` is then an error.
    """

    name: str
    builder: Builder
    description: str
    input_kind: InputKind
    paper_exact: bool
    default_depth: int | None = None
    default_width: int | None = None
    min_depth: int = 1
    default_heads: int | None = None
    default_seq_len: int | None = None
    default_tie_weights: bool | None = None

    def defaults(self) -> dict[str, int | bool]:
        """``{flag: default}`` for every flag of :data:`MODEL_FLAGS` the model uses."""
        values = {f: getattr(self, f"default_{f}") for f in MODEL_FLAGS}
        return {f: v for f, v in values.items() if v is not None}


_REGISTRY: Registry[ModelInfo] = Registry("model")


def register_model(name: str, *, description: str, input_kind: InputKind = "image",
                   paper_exact: bool = True, default_depth: int | None = None,
                   default_width: int | None = None, min_depth: int = 1,
                   default_heads: int | None = None, default_seq_len: int | None = None,
                   default_tie_weights: bool | None = None) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder(*, in_channels, num_classes, image_size[, depth][, ...])``.

    ``name`` must be non-empty lowercase. A model uses the flag ``f`` of :data:`MODEL_FLAGS` iff
    ``default_f`` is given; ``min_depth`` is the smallest valid depth.
    """
    _REGISTRY.check_name(name)
    if input_kind not in _INPUT_KINDS:
        raise ValueError(f"input_kind {input_kind!r} is not one of {_INPUT_KINDS}")
    if default_tie_weights is not None and not isinstance(default_tie_weights, bool):
        raise ValueError(f"default_tie_weights must be a bool or None, got {default_tie_weights!r}")

    def deco(builder: Builder) -> Builder:
        _REGISTRY.register(name, ModelInfo(name, builder, description, input_kind, paper_exact,
                                           default_depth, default_width, min_depth, default_heads,
                                           default_seq_len, default_tie_weights))
        return builder

    return deco


def list_models(input_kind: InputKind | None = None) -> list[str]:
    """Names of all registered models, sorted; only those of ``input_kind`` if it is given."""
    return sorted(m.name for m in _REGISTRY if input_kind in (None, m.input_kind))


def get_model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` registered under ``name`` (case-insensitive); ValueError if none."""
    return _REGISTRY.get(name)


def _check_positive(flag: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{flag} must be an integer >= {minimum}, got {value!r}")
    return value


def _resolve(info: ModelInfo, flag: str, value: object, minimum: int) -> dict[str, object]:
    """``{flag: value or default}`` if the model uses ``flag``; ``{}`` (or an error) if not."""
    default = getattr(info, f"default_{flag}")
    option = "--" + flag.replace("_", "-")
    if default is None:
        if value is not None:
            raise ValueError(f"model {info.name!r} has no {option} (got {value!r}); leave it out")
        return {}
    value = default if value is None else value
    if flag == "tie_weights":
        if not isinstance(value, bool):
            raise ValueError(f"{option} for {info.name!r} must be True or False, got {value!r}")
        return {flag: value}
    return {flag: _check_positive(f"{option} for {info.name!r}", value, minimum)}


def resolve_flags(name: str, **flags: object) -> dict[str, object]:
    """The architecture flags ``create_model(name, ...)`` would pass to the builder.

    ``flags`` maps names of :data:`MODEL_FLAGS` to values (``None`` = the model's default).
    Returns ``{flag: value}`` for every flag the model uses, defaults filled in; raises
    ValueError for an unknown model or flag name, a flag the model does not use (``fcn`` has no
    ``--heads``) or a value out of range.
    """
    info = get_model_info(name)
    unknown = sorted(set(flags) - set(MODEL_FLAGS))
    if unknown:
        raise ValueError(f"unknown model flag(s) {', '.join(unknown)}; the flags are "
                         f"{', '.join(MODEL_FLAGS)}")
    out: dict[str, object] = {}
    for flag in MODEL_FLAGS:
        out.update(_resolve(info, flag, flags.get(flag),
                            info.min_depth if flag == "depth" else 1))
    return out


def create_model(name: str, *, in_channels: int, num_classes: int, image_size: int,
                 depth: int | None = None, width: int | None = None, heads: int | None = None,
                 seq_len: int | None = None, tie_weights: bool | None = None) -> nn.Module:
    """Build the model registered under ``name`` with its own default initialisation.

    Image models take ``(B, in_channels, image_size, image_size)`` floats and return
    ``(B, num_classes)`` logits. Token models ignore ``in_channels`` and ``image_size``, treat
    ``num_classes`` as the vocabulary size and map ``(B, T)`` int64 to ``(B, T, num_classes)``.
    Each architecture flag ``None`` = the model's default; giving one the model does not use
    raises ValueError (see :func:`resolve_flags`).
    """
    info = get_model_info(name)
    _check_positive("num_classes", num_classes)
    if info.input_kind == "image":
        _check_positive("in_channels", in_channels)
        _check_positive("image_size", image_size)
    kwargs = resolve_flags(name, depth=depth, width=width, heads=heads, seq_len=seq_len,
                           tie_weights=tie_weights)
    return info.builder(in_channels=in_channels, num_classes=num_classes,
                        image_size=image_size, **kwargs)
