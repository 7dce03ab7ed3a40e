r"""The output layer's step, from the measured scale of its input (``docs/agd-stability.md`` §25).

AGD's majorisation bounds how far a step moves the output with the weights' norms alone: a
layer's input is taken at its bound, RMS 1 under AGD's scales (``docs/agd-rules.md`` §1), and a
relative step ``η/L`` of each of the L layers moves the output by at most ``∏(1 + η/L) − 1``.
For the layer that makes the output — the head, ``f = W x`` — its own share is exact, with no
Jacobian after it: ``ΔW x`` has RMS at most ``(η/L) · σ · ρ`` for a step of norm ``(η/L) · σ``,
where ``ρ = RMS(x)`` is its input's measured scale. Where ``ρ < 1`` (an LSTM's hidden state
``o ⊙ tanh(c)``: ρ ≈ 0.08 at initialisation, 0.65 after) the bound is loose by exactly ``1/ρ``
for the head and the head spends ρ of its budget. Where ``ρ > 1`` (a final norm's gain grown
by training) the bound's premise — every weight near its target scale — has failed upstream,
in the layer that grew; shrinking the head for it was measured not to help (§25). So a preset
with ``head`` steps the head by ``1/ρ`` times its share where ρ < 1, and by its share
otherwise:

.. code-block:: text

    ρ² = mean of x² over every element of the head's input, over the forwards since the last
         step (each forward with gradients enabled; over every rank of a process group)
    W_head ← W_head − gain · lr · (η/L) · σ · D · clamp(1/ρ, 1, L)   (every other tensor as before)

The cap ``L`` keeps the head's relative step within ``η``, the whole network's budget: an input
near zero (a state that starts at zero) would otherwise take the weight as far as it likes,
to a size the input's later scale turns into logits far off the bound. G is unchanged (the
head's first-order term is its gradient's, measured). The same argument for an inner layer
would need the Jacobian after it, which the bound does not measure (a recurrence applies it T
times: ``docs/agd-stability.md`` §23–§24), so only the head moves.

The heads are found on the first forward with gradients enabled: for each shape of a tensor
the model returns (its logits, a value head's output; a ``ModelOutput``'s fields count), the
last module to run with an output of that shape, if its own ``weight`` is a plain ``linear``
matrix of this optimiser. A weight tied to another module (an embedding shared with the output
layer) has other uses whose scale ρ does not measure: it is no head, and where no module
matches the step is the preset's without one.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["HeadScale", "head_multipliers"]


def _shapes(out: Any, into: set[tuple[int, ...]], depth: int = 0) -> set[tuple[int, ...]]:
    """The shapes of the tensors in a model's output (tensors, sequences, mappings and
    dataclass-like outputs, nested a few levels)."""
    if isinstance(out, Tensor):
        into.add(tuple(out.shape))
    elif depth < 4:
        items = (out.values() if isinstance(out, Mapping) else
                 out if isinstance(out, (list, tuple)) else ())
        for v in items:
            _shapes(v, into, depth + 1)
    return into


class Head:
    """One head's weight and ``totals``: the sum of its inputs' mean squares since the last
    step and their number (one tensor, which a compiled step reads and resets without a
    recompile; a 0-dim one's reset would be lost under ``torch.compile``)."""

    def __init__(self, param: Tensor, first: Tensor) -> None:
        self.param = param
        self.totals = torch.zeros(2, dtype=torch.promote_types(first.dtype, torch.float32),
                                  device=first.device)
        self.add(first)

    @torch.no_grad()
    def add(self, x: Tensor) -> None:
        """Count the input ``x``."""
        ms = x.detach().to(self.totals.dtype).square().mean()
        self.totals.add_(torch.stack([ms, torch.ones_like(ms)]))


class HeadScale:
    """The heads of ``model`` among the parameters ``infos`` (``{id: ParamInfo}``) and the mean
    square of each one's input on the forwards of each step (module docstring). On the first
    forward the candidates' hooks run no tensor op (that forward may be read op by op for the
    kinds, :mod:`.infer`): they keep their inputs until the model's own hook, which runs after
    the reader has stopped (its hooks are global, and global hooks run first). The hooks are
    objects, not closures, so that a model and its optimiser copied or pickled together keep
    measuring (the copy's hooks feed the copy's optimiser)."""

    def __init__(self, model: nn.Module, infos: Mapping[int, Any]) -> None:
        self.heads: list[Head] = []
        self._infos = infos  # the optimiser's (kinds read from the first forward included)
        self._order: list[tuple[nn.Module, tuple[int, ...], Tensor]] = []  # the first forward
        self._hooks: list[Any] = []
        # (module, its weight), read now (FSDP2 swaps a module's parameters in its forward)
        owners = Counter(id(p) for m in model.modules() for p in m._parameters.values())
        self._weights = [(m, w) for m in model.modules()
                         if isinstance(w := m._parameters.get("weight"), Tensor)
                         and id(w) in infos and owners[id(w)] == 1]
        if self._weights:
            self._hooks = [m.register_forward_hook(_Ran(self)) for m, _ in self._weights]
            self._hooks.append(model.register_forward_hook(_Returned(self)))

    def _choose(self, shapes: set[tuple[int, ...]]) -> None:
        """After the first forward: for each shape the model returns, the last candidate to run
        with an output of that shape is a head, if its weight is a plain ``linear`` matrix."""
        for h in self._hooks:
            h.remove()
        self._hooks, last = [], {}
        for m, shape, x in self._order:
            if shape in shapes:
                last[shape] = (m, x)
        self._order = []
        for m, x in last.values():
            w = next(w for k, w in self._weights if k is m)
            info = self._infos.get(id(w))
            if info is not None and _plain_linear(info.kind) and \
                    all(h.param is not w for h in self.heads):
                head = Head(w, x)  # the reader of the forward, if any, has stopped
                self.heads.append(head)
                self._hooks.append(m.register_forward_pre_hook(_Input(head)))
        self._weights = []

    @torch.no_grad()
    def factors(self, cap: float) -> list[tuple[Tensor, Tensor]]:
        """``(weight, 1/ρ within [1, cap])`` of every head, ρ² the mean square of its inputs
        since the last call over every rank of the default process group when there is one (1
        for a head that did not run); the sums restart."""
        if not self.heads:
            return []
        sums = torch.stack([h.totals.to(self.heads[0].totals.dtype) for h in self.heads])
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            torch.distributed.all_reduce(sums)
        for h in self.heads:
            h.totals.zero_()
        ms, n = sums[:, 0], sums[:, 1]
        inv = torch.where(n > 0, torch.rsqrt((ms / n.clamp_min(1)).clamp_min(
            torch.finfo(ms.dtype).tiny)).clamp(1.0, cap), torch.ones_like(ms))
        return [(h.param, inv[i]) for i, h in enumerate(self.heads)]

    #: The kinds report's line where AGD was given parameters without their model: no forward
    #: to hook, so every head keeps the step of the preset without ``head``.
    UNMEASURED = ("heads: not measured (AGD was given parameters without their model, so it "
                  "cannot read the head's input: pass AGD(model) or AGD(params, model=model))")

    def describe(self) -> str:
        """The kinds report's line: the heads found, by their names in the optimiser's infos,
        or that the first forward has not run yet, or that the model has none."""
        rule = "heads (step x clamp(1/rho, 1, L), rho its input's measured RMS; " \
               "docs/agd-stability.md §25): "
        if self.heads:
            return rule + ", ".join(self._infos[id(h.param)].name for h in self.heads)
        if self._weights:
            return rule + "not found yet (the first forward with gradients finds them)"
        return rule + "none (no plain, untied linear weight makes an output of the model)"

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_order": []}  # a first forward's inputs are not state


class _Ran:
    """Forward hook of a candidate (first forward): its output's shape and its input."""

    def __init__(self, scale: HeadScale) -> None:
        self.scale = scale

    def __call__(self, module: nn.Module, args: tuple, out: Any) -> None:
        if torch.is_grad_enabled() and _takes_tensor(args) and isinstance(out, Tensor):
            self.scale._order.append((module, tuple(out.shape), args[0]))


class _Returned:
    """Forward hook of the model (first forward): choose the head from what it returns."""

    def __init__(self, scale: HeadScale) -> None:
        self.scale = scale

    def __call__(self, module: nn.Module, args: tuple, out: Any) -> None:
        if torch.is_grad_enabled():
            self.scale._choose(_shapes(out, set()))


class _Input:
    """Forward pre-hook of a head: its input's mean square."""

    def __init__(self, head: Head) -> None:
        self.head = head

    def __call__(self, module: nn.Module, args: tuple) -> None:
        if torch.is_grad_enabled() and _takes_tensor(args):
            self.head.add(args[0])


def _takes_tensor(args: tuple) -> bool:
    return bool(args) and isinstance(args[0], Tensor)


def _plain_linear(kind: Any) -> bool:
    return kind is not None and kind.name == "linear" and kind.blocks == 1 \
        and kind.groups == 1 and kind.share == 1


def head_multipliers(base: Any, n: int, factors: list[tuple[int, Tensor]], dtype: torch.dtype,
                     device: torch.device) -> Tensor:
    """The ``(n,)`` step multipliers ``base`` (one number, a 0-dim or an ``(n,)`` tensor) with
    each ``(index, factor)``'s entry (a head's) times its factor."""
    out = torch.empty(n, dtype=dtype, device=device)
    out.copy_(torch.as_tensor(base, dtype=dtype, device=device).expand(n))
    for i, f in factors:
        out[i] *= f.to(dtype=dtype, device=device)
    return out
