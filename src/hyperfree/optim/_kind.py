"""What a parameter is: :class:`Kind` (its rule's name and how the tensor is packed, shared
and forked), and :func:`as_kind`. The rule each name stands for, and the table of them, are
:mod:`hyperfree.optim.rules` (which re-exports both)."""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .rules import KindRule

__all__ = ["Kind", "as_kind"]


@dataclasses.dataclass(frozen=True)
class Kind:
    """What a parameter is.

    ``name`` is one of :data:`KIND_NAMES`. ``blocks`` > 1 means the tensor stacks that many
    equal blocks, each a separate matrix (or vector) with its own normalisation — the packed
    Q/K/V of attention (3) or the gates of an LSTM (4); each block counts in ``L``. ``groups``
    is a convolution's channel groups (each group is a separate block-diagonal matrix), or, for
    a matrix kind, the attention heads of a per-head packed projection: its output rows are
    ``groups`` equal groups of ``blocks`` blocks each (GPT-NeoX's ``query_key_value``: per head
    Q, K, V), every (group, block) a matrix cell of its own. Groups split cells, never mass.
    ``share`` > 1: the tensor is one of ``share`` tensors whose outputs are summed into the same
    pre-activation (a recurrent layer's ``W_ih x + W_hh h``): together they are ONE layer of
    the product deep relative trust bounds, so each carries ``1/share`` of the mass
    (``docs/agd-rules.md`` §3). ``forks`` > 0: the tensor's path to the output is one of the
    two operands of that many sums of activations that fork from a common input (a residual
    branch and its skip, a shortcut beside a branch; read from the forward): a sum passes on
    ≈ 1/√2 of an operand's relative change, so the majorisation's curvature term of the
    tensor is 2^forks smaller and its step scale σ is √2^forks larger (:attr:`fork_scale`;
    ``docs/agd-stability.md`` §10). ``terms`` > 0: the sums of sums those forks join (a
    residual stream ``x + b_1 + … + b_K`` up to its norm) have that many terms, product over
    distinct streams, where the forks alone say 2^forks: each term is ≈ 1/√terms of the stream,
    so under a preset with ``streams`` the tensor's step (not G) has σ × √terms
    (:attr:`stream_scale`; ``docs/agd-stability.md`` §16). 0: nothing beyond the forks. None of
    these changes the mass or the initialisation.
    """

    name: str
    blocks: int = 1
    groups: int = 1
    share: int = 1
    forks: int = 0
    terms: int = 0

    def __post_init__(self) -> None:
        from .rules import KIND_RULES  # the table imports this module: read it when used
        rule = KIND_RULES.get(self.name)
        if rule is None:
            raise ValueError(f"unknown parameter kind {self.name!r}; choose one of "
                             f"{', '.join(KIND_RULES)}")
        for field, least in (("blocks", 1), ("groups", 1), ("share", 1), ("forks", 0),
                             ("terms", 0)):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"Kind {field} must be an integer >= {least}, got {value!r}")
        if self.groups > 1 and not rule.grouped:
            raise ValueError(f"only conv and matrix kinds have groups, got {self.name!r} with "
                             f"groups={self.groups}")

    def __str__(self) -> str:
        extra = [f"x{self.blocks}"] if self.blocks > 1 else []
        extra += [f"groups={self.groups}"] if self.groups > 1 else []
        extra += [f"share={self.share}"] if self.share > 1 else []
        extra += [f"forks={self.forks}"] if self.forks else []
        extra += [f"terms={self.terms}"] if self.terms else []
        return self.name + (f"({', '.join(extra)})" if extra else "")

    @property
    def fork_scale(self) -> float:
        """√2^forks: the factor of σ in the step and in G (not in the initialisation)."""
        return 2.0 ** (self.forks / 2)

    @property
    def stream_scale(self) -> float:
        """√terms (√2^forks where none were read): the factor of σ in a ``streams`` step."""
        return self.terms ** 0.5 if self.terms else self.fork_scale

    @property
    def rule(self) -> KindRule:
        """This kind's rule (:data:`hyperfree.optim.rules.KIND_RULES`)."""
        from .rules import KIND_RULES
        return KIND_RULES[self.name]


def as_kind(spec: str | Kind) -> Kind:
    """``"gain"`` -> ``Kind("gain")``; a :class:`Kind` is returned as is."""
    if isinstance(spec, Kind):
        return spec
    if isinstance(spec, str):
        return Kind(spec)
    from .rules import KIND_RULES
    raise ValueError(f"a parameter kind must be a kind name ({', '.join(KIND_RULES)}) or a "
                     f"hyperfree.optim.Kind, got {spec!r}")
