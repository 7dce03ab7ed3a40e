"""The model registry: every architecture the harness offers, built by name (timm style).

A family module registers one *builder* per variant with :func:`register_model`; the single entry
point :func:`create_model` validates the user's flags, fills in the variant's defaults and calls
the builder. A builder receives ``in_channels``, ``num_classes`` and ``image_size`` as keywords,
plus ``depth`` and/or ``width`` only when the variant uses them (declared by giving a default at
registration), so a builder's signature says exactly which flags it honours.

``paper_exact=True`` means the model has only 2-D (Linear) and 4-D (Conv2d) parameters — no
biases, no norm gains — so AGD's paper-exact mode (SPEC §1.1) accepts it as is.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Literal

from torch import nn

from hyperfree._registry import Registry

__all__ = ["Builder", "InputKind", "ModelInfo", "register_model", "get_model_info",
           "list_models", "create_model"]

InputKind = Literal["image", "tokens"]
Builder = Callable[..., nn.Module]
_INPUT_KINDS: tuple[str, ...] = ("image", "tokens")


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """A registered model: its builder and what the CLI says about it.

    ``default_depth`` / ``default_width`` are ``None`` when the model has no such flag; giving
    that flag to :func:`create_model` is then an error.
    """

    name: str
    builder: Builder
    description: str
    input_kind: InputKind
    paper_exact: bool
    default_depth: int | None = None
    default_width: int | None = None
    min_depth: int = 1


_REGISTRY: Registry[ModelInfo] = Registry("model")


def register_model(name: str, *, description: str, input_kind: InputKind = "image",
                   paper_exact: bool = True, default_depth: int | None = None,
                   default_width: int | None = None, min_depth: int = 1
                   ) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder(*, in_channels, num_classes, image_size[, depth][, width])``.

    ``name`` must be non-empty lowercase. A model uses the ``depth`` (``width``) flag iff
    ``default_depth`` (``default_width``) is given; ``min_depth`` is the smallest valid depth.
    """
    _REGISTRY.check_name(name)
    if input_kind not in _INPUT_KINDS:
        raise ValueError(f"input_kind {input_kind!r} is not one of {_INPUT_KINDS}")

    def deco(builder: Builder) -> Builder:
        _REGISTRY.register(name, ModelInfo(name, builder, description, input_kind, paper_exact,
                                           default_depth, default_width, min_depth))
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


def _resolve(info: ModelInfo, flag: str, value: int | None, default: int | None,
             minimum: int) -> dict[str, int]:
    """``{flag: value or default}`` if the model uses ``flag``; ``{}`` (or an error) if not."""
    if default is None:
        if value is not None:
            raise ValueError(f"model {info.name!r} has no --{flag} (got {value!r}); leave it out")
        return {}
    return {flag: _check_positive(f"--{flag} for {info.name!r}",
                                  default if value is None else value, minimum)}


def create_model(name: str, *, in_channels: int, num_classes: int, image_size: int,
                 depth: int | None = None, width: int | None = None) -> nn.Module:
    """Build the model registered under ``name`` with PyTorch's default initialisation.

    Image models take ``(B, in_channels, image_size, image_size)`` floats and return
    ``(B, num_classes)`` logits. Token models ignore ``in_channels`` and ``image_size`` and treat
    ``num_classes`` as the vocabulary size. ``depth``/``width`` ``None`` = the model's default;
    giving one the model does not use raises ValueError.
    """
    info = get_model_info(name)
    _check_positive("num_classes", num_classes)
    if info.input_kind == "image":
        _check_positive("in_channels", in_channels)
        _check_positive("image_size", image_size)
    kwargs = {**_resolve(info, "depth", depth, info.default_depth, info.min_depth),
              **_resolve(info, "width", width, info.default_width, 1)}
    return info.builder(in_channels=in_channels, num_classes=num_classes,
                        image_size=image_size, **kwargs)
