"""The rules of ``docs/agd-rules.md`` §1–§3, transcribed for the tests and nothing else.

Independent of ``hyperfree.optim``: nothing here imports it. Each parameter's *rule* is written
by hand in the test (which kind it is, how it is cut into cells, its σ and its mass), from the
rule table of the doc, never looked up in ``hyperfree.optim.kinds.RULES``:

.. code-block:: text

    cells    by explicit index tuples into the tensor (a block's rows, a conv's (group, kernel
             position) slice, an embedding row), transposed where the doc says the slice is
             stored (d_in, d_out) (HF Conv1D, ConvTranspose)
    D        "l2": u/‖u‖₂ (0 if u = 0);  "sign": sign(u);  "polar": Newton–Schulz, 5 steps,
             (a, b, c) = (3.4445, −4.7750, 2.0315), Frobenius pre-normalisation, iterated on
             the wide orientation (rows ≤ cols)
    G        (1/L) Σ_cells σ ⟨u_c, D_c⟩,   L = Σ_params mass
    η        log((1 + √(1 + 4G)) / 2)
    update   W_c ← W_c − gain · (η/L) · σ · D_c

Not a test file (no ``test_`` prefix); ``test_agd_kinds.py`` and its siblings import it.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

NS_A, NS_B, NS_C = 3.4445, -4.7750, 2.0315

Index = tuple  # an index tuple into the tensor: (slice, ...) or (int,) or (Ellipsis,)


@dataclasses.dataclass(frozen=True)
class Rule:
    """How one parameter is treated: its cells ``(index, transposed)``, σ, mass, direction."""

    cells: tuple[tuple[Index, bool], ...]
    sigma: float
    mass: int
    how: str  # "l2", "polar" or "sign" (before the family is applied: see ``direction_of``)


WHOLE: tuple[tuple[Index, bool], ...] = (((Ellipsis,), False),)


def linear(shape, blocks: int = 1, share: int = 1) -> Rule:
    """``(B·h, d_in)``: B blocks of rows, σ = √(h/d_in), mass B (B/share when the layer's
    pre-activation sums it with ``share - 1`` other matrices: an RNN's W_ih and W_hh)."""
    h = shape[0] // blocks
    cells = tuple(((slice(b * h, (b + 1) * h), slice(None)), False) for b in range(blocks))
    return Rule(cells, math.sqrt(h / shape[1]), blocks / share, "matrix")


def in_out(shape) -> Rule:
    """HF Conv1D ``(d_in, d_out)``: the matrix is the transpose; σ = √(d_out/d_in)."""
    return Rule((((slice(None), slice(None)), True),), math.sqrt(shape[1] / shape[0]), 1,
                "matrix")


def conv(shape, groups: int = 1) -> Rule:
    """``(c_out, c_in/g, *k)``: one ``(c_out/g, c_in/g)`` slice per group and kernel position."""
    co, ci = shape[0] // groups, shape[1]
    positions = list(itertools.product(*[range(k) for k in shape[2:]]))
    cells = tuple(((slice(grp * co, (grp + 1) * co), slice(None), *pos), False)
                  for grp in range(groups) for pos in positions)
    return Rule(cells, math.sqrt(co / ci) / math.sqrt(len(positions)), 1, "matrix")


def conv_transpose(shape, groups: int = 1) -> Rule:
    """``(c_in, c_out/g, *k)``: each stored ``(c_in/g, c_out/g)`` slice is the transpose of the
    ``(c_out/g, c_in/g)`` matrix; σ = √(c_out/c_in)/√K."""
    ci, co = shape[0] // groups, shape[1]
    positions = list(itertools.product(*[range(k) for k in shape[2:]]))
    cells = tuple(((slice(grp * ci, (grp + 1) * ci), slice(None), *pos), True)
                  for grp in range(groups) for pos in positions)
    return Rule(cells, math.sqrt(co / ci) / math.sqrt(len(positions)), 1, "matrix")


def embedding(shape, family: str) -> Rule:
    """``(V, d)``: the table (frobenius) or each row (spectral), σ = √d, mass 1, ℓ2."""
    cells = WHOLE if family == "frobenius" else tuple(((t,), False) for t in range(shape[0]))
    return Rule(cells, math.sqrt(shape[1]), 1, "l2")


def gain(shape) -> Rule:
    """A norm's gain: σ = 1, mass 1, ℓ2 (frobenius) or sign (spectral)."""
    return Rule(WHOLE, 1.0, 1, "gain")


def bias(shape, blocks: int = 1) -> Rule:
    """A bias (flattened length B·h): each block σ = √h, mass 0, ℓ2."""
    n = math.prod(shape)
    h = n // blocks
    if blocks == 1:
        return Rule(WHOLE, math.sqrt(n), 0, "l2")
    cells = tuple(((slice(b * h, (b + 1) * h),), False) for b in range(blocks))
    return Rule(cells, math.sqrt(h), 0, "l2")


def generic(shape) -> Rule:
    """A tensor of unknown role, any shape: the whole tensor one cell, σ = √numel, mass 0, ℓ2
    (docs/agd-rules.md §4)."""
    return Rule(WHOLE, math.sqrt(math.prod(shape)), 0, "l2")


def per_head(shape, blocks: int, heads: int) -> Rule:
    """A ``(heads·blocks·h, d_in)`` per-head packed projection: heads x blocks cells of ``h``
    rows (head-major), σ = √(h/d_in) each, mass ``blocks``."""
    h = shape[0] // (blocks * heads)
    cells = tuple(((slice(c * h, (c + 1) * h), slice(None)), False)
                  for c in range(blocks * heads))
    return Rule(cells, math.sqrt(h / shape[1]), blocks, "matrix")


def direction_of(rule: Rule, family: str) -> str:
    if rule.how == "matrix":
        return "polar" if family == "spectral" else "l2"
    if rule.how == "gain":
        return "sign" if family == "spectral" else "l2"
    return "l2"


def ns_polar(m: Tensor, steps: int = 5) -> Tensor:
    """The documented Newton–Schulz iteration on one matrix, written out (float64); a matrix
    with one row or one column has rank one and its polar factor, ``m / ‖m‖_F``, is exact."""
    if min(m.shape) == 1:
        return svd_polar(m) if float(m.double().norm()) > 0 else torch.zeros_like(
            m, dtype=torch.float64)
    x = m.double().clone()
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    n = math.sqrt(float((x * x).sum()))
    if n == 0:
        return torch.zeros_like(m, dtype=torch.float64)
    x = x / n
    for _ in range(steps):
        a = x @ x.T
        x = NS_A * x + NS_B * (a @ x) + NS_C * (a @ (a @ x))
    return x.T if tall else x


def svd_polar(m: Tensor) -> Tensor:
    """The exact polar factor ``U Vᵀ`` of a matrix (float64)."""
    u, _, vh = torch.linalg.svd(m.double(), full_matrices=False)
    return u @ vh


def unit(u: Tensor, how: str) -> Tensor:
    """The unit direction ``D`` of one cell ``u`` (float64)."""
    u = u.double()
    if how == "sign":
        return torch.sign(u)
    if how == "polar":
        return ns_polar(u)
    n = math.sqrt(float((u * u).sum()))
    return u / n if n > 0 else torch.zeros_like(u)


def _cell(t: Tensor, index: Index, transposed: bool) -> Tensor:
    c = t[index]
    return c.T if transposed else c


@dataclasses.dataclass
class Step:
    eta: float
    L: int
    G: float
    new: dict[str, Tensor]  # float64 weights after the step


def spec_step(params: Mapping[str, Tensor], rules: Mapping[str, Rule], family: str, *,
              gain: float = 1.0, grads: Mapping[str, Tensor] | None = None,
              mass_of: Mapping[str, int] | None = None) -> Step:
    """One AGD step by the doc's formula, from ``p.grad`` (or ``grads[name]``).

    Parameters in ``params`` without a rule are not allowed; a parameter with no gradient
    counts in ``L`` and does not move.
    """
    assert set(params) == set(rules), (sorted(params), sorted(rules))
    L = sum(r.mass for r in rules.values())
    total = 0.0
    dirs: dict[str, list[Tensor | None]] = {}
    for name, rule in rules.items():
        g = (grads or {}).get(name, params[name].grad)
        if g is None:
            continue
        u = g.detach().double()
        how = direction_of(rule, family)
        dirs[name] = []
        for index, tr in rule.cells:
            uc = _cell(u, index, tr)
            D = unit(uc, how)
            total += rule.sigma * float((uc * D).sum())
            dirs[name].append(D)
    G = total / L
    eta = math.log((1 + math.sqrt(1 + 4 * G)) / 2)
    new = {}
    for name, rule in rules.items():
        w = params[name].detach().double().clone()
        for (index, tr), D in zip(rule.cells, dirs.get(name, [])):
            delta = gain * eta / L * rule.sigma * D
            w[index] -= delta.T if tr else delta
        new[name] = w
    return Step(eta, L, G, new)


def assert_step_equals(model_params: Mapping[str, Tensor], step: Step, *, rtol: float = 1e-10,
                       atol: float = 1e-12) -> None:
    """Every parameter equals the spec's float64 value."""
    for name, p in model_params.items():
        torch.testing.assert_close(p.detach().double(), step.new[name], rtol=rtol, atol=atol,
                                   msg=lambda m, name=name: f"{name}: {m}")


def hand_rules(model: nn.Module, family: str, extra: Mapping[str, Rule] | None = None
               ) -> dict[str, Rule]:
    """Every parameter's rule from its owner's type, transcribed from the doc's table (§2) for
    the layer types the tests use; ``extra`` overrides. A tied parameter is listed once, under
    its first name, with the first owner's rule (the tests state ties' rules themselves)."""
    out = dict(extra or {})
    seen = {id(p) for n, p in model.named_parameters() if n in out}
    for mname, m in model.named_modules():
        for local, p in m.named_parameters(recurse=False):
            name = f"{mname}.{local}" if mname else local
            if name in out or id(p) in seen:
                continue
            seen.add(id(p))
            out[name] = _owner_rule(m, local, p.shape, family)
    return out


def _owner_rule(m: nn.Module, local: str, shape, family: str) -> Rule:
    if isinstance(m, nn.MultiheadAttention):
        if local == "in_proj_weight":
            return linear(shape, 3)
        if local == "in_proj_bias":
            return bias(shape, 3)
        return bias(shape) if local.startswith("bias") else linear(shape)
    if isinstance(m, (nn.RNN, nn.LSTM, nn.GRU)):
        gates = 4 if isinstance(m, nn.LSTM) else 3 if isinstance(m, nn.GRU) else 1
        if local.startswith("weight_hr"):
            return linear(shape)
        return linear(shape, gates, share=2) if local.startswith("weight") else \
            bias(shape, gates)
    if local == "bias":
        return bias(shape)
    if isinstance(m, nn.Linear):
        return linear(shape)
    if isinstance(m, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        return conv_transpose(shape, m.groups)
    if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return conv(shape, m.groups)
    if isinstance(m, (nn.LayerNorm, nn.RMSNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm,
                      nn.InstanceNorm2d)):
        return gain(shape)
    if isinstance(m, (nn.Embedding, nn.EmbeddingBag)):
        return embedding(shape, family)
    if type(m).__qualname__ == "Conv1D":
        return in_out(shape)
    raise AssertionError(f"no hand rule for {type(m).__name__}.{local}")


def _conv1d_init(self, nf: int, nx: int, bias: bool = True) -> None:
    nn.Module.__init__(self)
    self.nf = nf
    self.weight = nn.Parameter(torch.randn(nx, nf) / math.sqrt(nx))  # stored (d_in, d_out)
    self.bias = nn.Parameter(0.1 * torch.randn(nf)) if bias else None


def _conv1d_forward(self, x: Tensor) -> Tensor:
    out = x @ self.weight
    return out + self.bias if self.bias is not None else out


#: Hugging Face's GPT-2 ``Conv1D`` as far as AGD can tell: ``y = x W + b`` with ``W`` stored
#: ``(d_in, d_out)``, and the import path ``transformers.pytorch_utils.Conv1D`` (transformers is
#: not imported). ``HFConv1D(nf=d_out, nx=d_in)`` as in transformers.
HFConv1D = type("Conv1D", (nn.Module,), {
    "__init__": _conv1d_init, "forward": _conv1d_forward,
    "__module__": "transformers.pytorch_utils", "__qualname__": "Conv1D"})
