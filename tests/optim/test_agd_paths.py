"""The fast path (``hyperfree.AGD``) equals the reference twin (:class:`tests.optim.reference.ReferenceAGD`),
and each really runs its own step.

* Registry-wide: for EVERY preset in ``hyperfree.optim.PRESETS``, six float64 steps on
  :class:`tests.optim.conftest.Zoo` (every parameter kind in one model, initialised by
  ``init_weights``) give the same η at every step, the same weights and the same momentum
  buffers (1e-9). Several steps, because momentum and retraction only act after the first.
  The attention biases are left out of the multi-step model: the key bias has a gradient that
  is zero in exact arithmetic and ~1e-17 noise in floating point, AGD normalises that noise
  (docs/agd-rules.md §5), and tiny differences between the paths then send it along unrelated
  directions in later steps. With them (packed ``in_proj_bias``, ``bias_k``/``bias_v``) the
  comparison is one step, where both paths see the very same gradient.
* Each runs its own maths: with ``hyperfree.optim.agd.agd`` (the pure step) patched to raise,
  the reference still steps (and the fast path raises), and conversely with the reference
  patched.
Run: ``pytest tests/optim/test_agd_paths.py``.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch

import hyperfree
from hyperfree.optim import PRESETS

from . import reference
from .conftest import Zoo, zoo_loss
from .reference import make_agd


def _pair(attn_bias: bool, preset: str):
    torch.manual_seed(0)
    model = Zoo(attn_bias=attn_bias).double()
    hyperfree.AGD(model).init_weights(torch.Generator().manual_seed(1))
    twin = copy.deepcopy(model)
    return (model, make_agd(model, preset=preset, path="fast"),
            twin, make_agd(twin, preset=preset, path="reference"))


def _assert_same(model, twin, opt, opt_twin):
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-11, msg=lambda m, n=name: f"{n}: {m}")
        a, b = opt.state[p].get("momentum_buffer"), opt_twin.state[q].get("momentum_buffer")
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_fast_path_equals_reference_twin_over_several_steps(preset):
    model, opt, twin, opt_twin = _pair(attn_bias=False, preset=preset)
    start = [p.detach().clone() for p in model.parameters()]
    etas = []
    for t in range(6):
        for m, o in ((model, opt), (twin, opt_twin)):
            o.zero_grad()
            zoo_loss(m, seed=t).backward()
            o.step()
        assert math.isclose(float(opt.eta), float(opt_twin.eta), rel_tol=1e-9), t
        etas.append(float(opt.eta))
    if PRESETS[preset].estimate.lagged:  # the first step only fills the momentum; later
        assert etas[0] == 0 and max(etas) > 0 and min(etas) >= 0  # G >= 0 may clamp to 0
    else:
        assert min(etas) > 0
    _assert_same(model, twin, opt, opt_twin)
    moved = [n for (n, p), p0 in zip(model.named_parameters(), start) if not torch.equal(p, p0)]
    assert len(moved) == len(start)  # not vacuous: every parameter took part
    if PRESETS[preset].momentum:
        assert all("momentum_buffer" in opt.state[p] for p in model.parameters())


@pytest.mark.parametrize("preset", list(PRESETS))
def test_fast_path_equals_reference_twin_with_attention_biases_one_step(preset):
    model, opt, twin, opt_twin = _pair(attn_bias=True, preset=preset)
    for m, o in ((model, opt), (twin, opt_twin)):
        zoo_loss(m).backward()
        o.step()
    assert math.isclose(float(opt.eta), float(opt_twin.eta), rel_tol=1e-10)
    _assert_same(model, twin, opt, opt_twin)


def _boom(*args, **kwargs):
    raise RuntimeError("this path must not run")


@pytest.mark.parametrize("preset", ["paper", "spectral-momentum"])
@pytest.mark.parametrize("broken", ["fast", "reference"])
def test_each_path_runs_its_own_step(monkeypatch, broken, preset):
    if broken == "fast":
        monkeypatch.setattr(hyperfree.optim.agd, "agd", _boom)
    else:
        monkeypatch.setattr(reference, "reference_step", _boom)
    working = "fast" if broken == "reference" else "reference"
    for path in ("fast", "reference"):
        torch.manual_seed(0)
        model = Zoo().double()
        before = [p.detach().clone() for p in model.parameters()]
        opt = make_agd(model, preset=preset, path=path)
        zoo_loss(model).backward()
        if path == working:
            opt.step()
            assert float(opt.eta) > 0
            assert not any(torch.equal(p, b) for p, b in zip(model.parameters(), before))
        else:
            with pytest.raises(RuntimeError, match="must not run"):
                opt.step()
