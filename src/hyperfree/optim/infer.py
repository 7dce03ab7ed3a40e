r"""Kinds read from the computation: what one forward does with each parameter.

Where the rules table (:mod:`.kinds`) has no entry for a parameter — an ``LlamaRMSNorm``, a
ViT ``cls_token``, a Mamba ``A_log`` — AGD reads one forward (an example input, the model's
``dummy_inputs``, or the first real batch) under a ``TorchDispatchMode`` and derives the kind
from the ATen operation that consumes the parameter (``docs/agd-rules.md`` §4):

.. code-block:: text

    consumed by                                            kind
    mm/addmm/bmm/linear as the matrix (in = contracted)    linear (stored (d_out, d_in)) or
                                                           linear_in_out (stored (d_in, d_out))
    convolution's weight (transposed, groups)              conv / conv_transpose (groups)
    embedding, embedding_bag, index_select / p[idx]        embedding
    the weight of layer/batch/group/rms norm               gain
    x * p, p a vector broadcast over an activation x       gain
    x + p, x - p, addmm's input, a conv's or norm's bias   bias      (p a vector)
    cat(x, p): p a vector joined to the activations        bias      (a learned token)
    a fused RNN op (mkldnn/cudnn): rows = gates x hidden   linear x gates, bias x gates
    anything else: exp, a (1, T, d) table added to x, ...  none: the parameter is generic

Layout ops (views, transposes, casts, ``expand``/``repeat``) and affine ops with a scalar
(``1 + p``, ``-p``) are followed back to the parameter. Several uses give one kind if they
agree or :data:`~.kinds.TIE_RESOLUTION` picks one; otherwise, or if one use has no rule, none.

Packing. The output dim of every matrix product (and the bias added to it) is followed through
views, transposes and elementwise ops. A tensor carrying it that is consumed ONLY by equal splits
along it — split/chunk/unbind, a select of each index, slices that partition it — with no other
consumer of any tensor between it and the product, packs that many blocks: contiguous blocks
when the split is of the whole output dim (GPT-2's ``c_attn``, ``nn.MultiheadAttention``, GRU
gates), per-head ``groups`` when it is of an inner factor (GPT-NeoX's ``query_key_value`` viewed
``(heads, 3·head_dim)`` and chunked). Rotary embeddings slice halves of ``q`` but also use ``q``
whole: not packing.

Forks. Every tensor's lineage (the parameters it was computed from) and the forward's graph
are followed too (:mod:`._paths`). A sum ``a + b`` of two activations with a parameter in
common but not the same lineage is a fork–join (a residual branch and its skip, a shortcut
beside a branch); a parameter used once by the forward gains one ``fork`` (:func:`forked`;
``docs/agd-stability.md`` §10) per such operand that holds it while the other does not, and
that every path from it to the forward's output crosses. A bias or a position table added to an
activation shares no parameter with it: no fork.
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ._reader import Reader, Reading, Use
from .kinds import resolve_tie
from .rules import Kind

__all__ = ["Use", "Reading", "Reader", "decide", "packed", "forked", "kind_of", "read_forward",
           "read_kinds", "call_with", "refine", "REFINEMENTS"]


def decide(reading: Reading, shape: Sequence[int]) -> tuple[Kind | None, str]:
    """The kind a reading gives a parameter of ``shape`` (None: generic) and why."""
    if not reading.uses:
        return None, "not used by the forward that was read"
    blind = next((u for u in reading.uses if u.kind is None), None)
    if blind is not None:
        return None, blind.why
    kinds = [u.kind for u in reading.uses]
    kind = resolve_tie(kinds)
    if kind is None:
        roles = sorted({f"{u.kind} ({u.op})" for u in reading.uses})
        return None, "used as " + " and as ".join(roles)
    why = next(u.why for u in reading.uses if u.kind == kind)
    try:
        kind.rule.check("p", shape, kind)
    except ValueError as e:
        return None, f"{why}, but {e}"
    return kind, why


def packed(kind: Kind, reading: Reading, shape: Sequence[int]) -> tuple[Kind, str] | None:
    """``kind`` packed as the reading found (None if nothing to pack or it cannot be)."""
    if reading.packing is None or reading.packing == (1, 1):
        return None
    blocks, groups = reading.packing
    new = kind.rule.packed(kind, blocks, groups)
    if new is None:
        return None
    try:
        new.rule.check("p", shape, new)
    except ValueError:
        return None
    how = f"{blocks} blocks" + (f" in each of {groups} heads" if groups > 1 else "")
    return new, f"its output is split into {how} (a packed projection)"



def forked(kind: Kind, reading: Reading, shape: Sequence[int]) -> tuple[Kind, str] | None:
    """``kind`` with the forks the reading counted (None if none, or if it already shares its
    layer with the matrices it is summed with: the share rule counts that sum). A tensor used
    more than once (RWKV's token-shift mix ``x·μ + x₋₁·(1 − μ)``, a bias added at every step
    of a recurrence) has its forks counted over all its uses: a sum counts only where every
    path from every use crosses it (``._paths``), so a recurrent weight, whose later uses
    reach the sum on both sides, and a tied embedding, whose head use bypasses the stream,
    get none."""
    # the stream's terms only where they say more than the forks (2 per isolated sum)
    terms = reading.terms if reading.forks and reading.terms != 2 ** reading.forks else 0
    if (reading.forks, terms) == (kind.forks, kind.terms) or kind.share > 1:
        return None
    return (dataclasses.replace(kind, forks=reading.forks, terms=terms),
            f"on one side of {reading.forks} sum(s) of forked activations (a residual branch "
            f"or a shortcut): its step scale is x{2 ** (reading.forks / 2):.3g}"
            + (f", x{terms ** 0.5:.3g} in the default's step (a stream of {terms} terms)"
               if terms else ""))


def call_with(model: nn.Module, example: Any) -> Any:
    """``model(example)``: a tensor, a tuple/list of positional arguments, or a dict of keyword
    arguments."""
    if isinstance(example, Mapping):
        return model(**example)
    if isinstance(example, (tuple, list)):
        return model(*example)
    return model(example)


@contextlib.contextmanager
def _side_effect_free(model: nn.Module):
    """The RNG streams (CPU and the model's accelerator) and every buffer (BatchNorm's running
    statistics) as they were before. Autograd stays on, as in training: with it off some
    modules take fused inference paths (``nn.MultiheadAttention`` in eval mode) that hide how
    they use their parameters; the graph is freed with the output."""
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            with torch.no_grad():
                for b, v in saved:
                    b.copy_(v)


def read_forward(model: nn.Module, example: Any, params: list[Tensor],
                 measure: tuple[int, ...] = ()) -> tuple[list[Reading], str | None]:
    """The readings of ``params`` from one side-effect-free forward of ``model`` on
    ``example``, and the reading's error (None if it read every op)."""
    reader = Reader(params, measure)
    with _side_effect_free(model), reader:
        call_with(model, example)
    return reader.readings(), reader.error


def read_kinds(model: nn.Module, example: Any) -> dict[str, tuple[Kind | None, str]]:
    """What one forward of ``model`` on ``example`` says every trainable parameter is —
    ignoring the rules table: ``{name: (kind, why)}``, the kind None for a generic tensor
    outside every residual branch (:func:`kind_of`)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    readings, error = read_forward(model, example, [p for _, p in named])
    out = {}
    for (name, p), reading in zip(named, readings):
        kind, why = kind_of(reading, tuple(p.shape))
        out[name] = (kind, why if error is None else f"{why} (reading stopped: {error})")
    return out


def shared(kind: Kind, reading: Reading, shape: Sequence[int]) -> tuple[Kind, str] | None:
    """``kind`` sharing its layer's mass with the matrices whose products the reading saw added
    to its own before any other op (``W_ih x + W_hh h``: one layer acting on ``[x; h]``,
    ``docs/agd-rules.md`` §3); None if there are none or ``kind`` has no mass to share."""
    if reading.share <= kind.share or kind.rule.mass(shape, kind) == 0:
        return None
    return (dataclasses.replace(kind, share=reading.share),
            f"its product is added to {reading.share - 1} other matrix product(s) in one "
            "pre-activation: one layer, whose mass they share")


REFINEMENTS = (("shared", shared), ("forked", forked), ("packed", packed))
"""What a reading adds to a kind, in this order (:func:`refine`): ``(name, step)``."""


def refine(kind: Kind, reading: Reading,
           shape: Sequence[int]) -> list[tuple[str, Kind, str]]:
    """Each refinement of :data:`REFINEMENTS` that changes ``kind`` — ``(step, new kind, why)``,
    each applied to the previous one's kind: :func:`shared`, :func:`forked`, :func:`packed`.
    The one chain both ``AGD(model)`` (:class:`~._resolve.Resolution`) and :func:`kind_of`
    apply, to a table's kind, a read one, or ``generic`` (which only forks change: it has no
    mass to share and no rows to pack)."""
    out = []
    for name, step in REFINEMENTS:
        more = step(kind, reading, shape)
        if more is not None:
            kind = more[0]
            out.append((name, kind, more[1]))
    return out


def kind_of(reading: Reading, shape: Sequence[int]) -> tuple[Kind | None, str]:
    """:func:`decide`, then :func:`refine`: the kind a reading alone gives (None: generic, and
    no fork either; a generic tensor in a residual branch is ``generic`` with its forks)."""
    kind, why = decide(reading, shape)
    steps = refine(kind or Kind("generic"), reading, shape)
    for _, kind, note in steps:
        why = f"{why}; {note}"
    return kind, why
