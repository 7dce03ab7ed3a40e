"""Per-parameter gains for the probes (``benchmarks/agd_variants.py``, ``hf_forks.py``,
``hf_llama.py``): ``--param-gain PATTERN=G`` gives the parameters whose qualified name matches
the fnmatch ``PATTERN`` ``G`` times the step (AGD's per-group ``gain``), a diagnostic, never a
rule."""
from __future__ import annotations

import argparse
import fnmatch
import math
from typing import Any, Sequence

import torch

from hyperfree.optim.rules import MatrixRule

__all__ = ["param_gain_groups", "pattern_gain", "matrices", "init_norm_ratios",
           "init_norm_on_first_step"]


def param_gain_groups(model: torch.nn.Module, rules: Sequence[tuple[str, float]]
                      ) -> list[dict[str, Any]]:
    """Parameter groups giving each parameter the gain of the first ``(pattern, gain)`` whose
    fnmatch pattern matches its qualified name (the others: the optimiser's ``gain``); a
    pattern that matches nothing is a ``ValueError`` (a typo would otherwise probe nothing)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]  # frozen: none
    for pattern, _ in rules:
        if not any(fnmatch.fnmatchcase(n, pattern) for n, _ in named):
            raise ValueError(f"--param-gain {pattern}: matches no parameter of the model "
                             f"(names: {', '.join(n for n, _ in named[:6])}, ...)")
    groups: dict[float | None, list[torch.nn.Parameter]] = {}
    for n, p in named:
        gain = next((g for pat, g in rules if fnmatch.fnmatchcase(n, pat)), None)
        groups.setdefault(gain, []).append(p)
    return [{"params": ps, **({} if g is None else {"gain": g})} for g, ps in groups.items()]


def pattern_gain(text: str) -> tuple[str, float]:
    """``(pattern, gain)`` from ``PATTERN=GAIN`` (an argparse ``type``)."""
    pattern, sep, gain = text.rpartition("=")
    try:
        value = float(gain)
    except ValueError:
        value = math.nan
    if not sep or not pattern or not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r}: give PATTERN=GAIN with a positive gain, "
                                         "e.g. 'fc.*=2'")
    return pattern, value


def matrices(t: torch.Tensor, kind: Any) -> torch.Tensor | None:
    """``t`` (a parameter, or its gradient or momentum) as the stack of its kind's
    ``(d_out, d_in)`` matrices — blocks, heads, kernel positions — by the library's own
    :class:`~hyperfree.optim.cells.MatrixView`; None for a kind that is not a matrix."""
    if not isinstance(kind.rule, MatrixRule):
        return None
    v = kind.rule.matrix_view(tuple(t.shape), kind)
    return t.float().reshape(v.split).permute(v.order).reshape(v.n, v.d_out, v.d_in)


@torch.no_grad()
def init_norm_ratios(opt: Any) -> dict[int, float]:
    """``{id(p): r}``: each matrix's operator norm now (the median over its cells: blocks,
    heads, kernel positions) over its kind's target σ, for the matrices of ``opt`` (an AGD whose
    kinds are settled); 1 at AGD's initialisation. A probe of ``docs/agd-stability.md`` §18:
    AGD's σ read from the weights it is given (a model's own initialisation, a pretraining)."""
    out = {}
    for info in opt._infos.values():
        p, k = info.param, info.kind
        cells = matrices(p, k)
        if cells is None:
            continue
        norm = float(torch.linalg.matrix_norm(cells, 2).median())
        if norm > 0:
            out[id(p)] = norm / k.rule.sigma(tuple(p.shape), k)
    return out


def init_norm_on_first_step(opt: Any, mode: str) -> dict[int, float]:
    """Wrap ``opt.step`` (an AGD with one parameter per group) so that its first call measures
    :func:`init_norm_ratios` — after AGD's or the model's initialisation, or a pretrained load
    — and multiplies each group's gain by its ratio; with ``mode`` ``"both"`` every step also
    multiplies each matrix's gradient by it, which puts the ratio in its term of G as well (σ
    the measured norm in G and the step: the step's direction ignores the scale). Returns the
    ratios (filled at the first step)."""
    if mode not in ("step", "both"):
        raise ValueError(f"mode {mode!r} is not 'step' or 'both'")
    if any(len(g["params"]) != 1 for g in opt.param_groups):
        raise ValueError("init_norm_on_first_step needs one parameter per group")
    plain, ratios = opt.step, {}

    def step(closure: Any = None) -> Any:
        if not ratios:
            ratios.update(init_norm_ratios(opt))
            for g in opt.param_groups:
                g["gain"] *= ratios.get(id(g["params"][0]), 1.0)
        if mode == "both":
            for g in opt.param_groups:
                p = g["params"][0]
                if p.grad is not None and id(p) in ratios:
                    p.grad.mul_(ratios[id(p)])
        return plain(closure)
    opt.step = step
    return ratios
