"""AGD under the tools that read ``param_groups[i]["lr"]``: torch's LR schedulers and SWALR.

For every scheduler the issue lists (LambdaLR, StepLR, CosineAnnealingLR, LinearLR, OneCycleLR,
ReduceLROnPlateau) and ``torch.optim.swa_utils.SWALR``, on ``hyperfree.AGD``:

* the lr the scheduler writes scales AGD's step: at every step the displacement equals
  ``lr ×`` the displacement a twin (same weights, same gradient) takes at lr 1 — η itself does
  not depend on lr, so lr is a plain multiplier on top of AGD as derived;
* the lr actually changes over the steps (the scheduler is not a silent no-op);
* optimiser + scheduler ``state_dict`` round trips resume exactly: k steps, save, fresh model,
  optimiser and scheduler, load, continue equals never stopping, bit for bit.

Run: .venv/bin/python -m pytest -q tests/ecosystem/test_schedulers.py
"""
from __future__ import annotations

import copy
import io
from typing import Any, Callable

import pytest
import torch
from torch.optim import lr_scheduler
from torch.optim.swa_utils import SWALR

import hyperfree

from _ecosystem_helpers import agd, backward, flat, tiny_net

STEPS = 6


def _plateau_step(sched: Any, i: int) -> None:
    sched.step(float(i))  # a metric that only grows: every step is a plateau


SCHEDULERS: dict[str, Callable[[torch.optim.Optimizer], Any]] = {
    "LambdaLR": lambda opt: lr_scheduler.LambdaLR(opt, lambda s: 0.8 ** s),
    "StepLR": lambda opt: lr_scheduler.StepLR(opt, step_size=2, gamma=0.5),
    "CosineAnnealingLR": lambda opt: lr_scheduler.CosineAnnealingLR(opt, T_max=STEPS),
    "LinearLR": lambda opt: lr_scheduler.LinearLR(opt, start_factor=0.25, total_iters=4),
    # AGD has no momentum/betas hyperparameter for OneCycleLR to cycle
    "OneCycleLR": lambda opt: lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=2 * STEPS,
                                                      cycle_momentum=False),
    "ReduceLROnPlateau": lambda opt: lr_scheduler.ReduceLROnPlateau(opt, factor=0.5,
                                                                    patience=0),
    "SWALR": lambda opt: SWALR(opt, swa_lr=0.25, anneal_epochs=3),
}


def _sched_step(name: str, sched: Any, i: int) -> None:
    if name == "ReduceLROnPlateau":
        _plateau_step(sched, i)
    else:
        sched.step()


@pytest.mark.parametrize("preset", ["paper", "spectral-momentum"])
@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_scheduler_lr_scales_agd_step(name: str, preset: str) -> None:
    model = tiny_net()
    opt = agd(model, preset)
    sched = SCHEDULERS[name](opt)
    lrs = []
    for i in range(STEPS):
        twin_model, twin_opt = copy.deepcopy((model, opt))
        for g in twin_opt.param_groups:
            g["lr"] = 1.0
        before = flat(model)
        backward(model, opt, i)
        backward(twin_model, twin_opt, i)
        lr = opt.param_groups[0]["lr"]
        opt.step()
        twin_opt.step()
        moved, moved_at_1 = flat(model) - before, flat(twin_model) - before
        assert moved_at_1.norm() > 0
        torch.testing.assert_close(moved, lr * moved_at_1, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(opt.eta, twin_opt.eta)  # η is AGD's, whatever the lr
        lrs.append(lr)
        _sched_step(name, sched, i)
    assert len(set(lrs)) > 1, f"{name} never changed lr: {lrs}"
    assert all(0 < lr <= 1.0 + 1e-12 for lr in lrs), lrs


def _save(*objs: Any) -> bytes:
    buf = io.BytesIO()
    torch.save([o.state_dict() for o in objs], buf)
    return buf.getvalue()


def _load(data: bytes) -> list[Any]:
    return torch.load(io.BytesIO(data), weights_only=True)


@pytest.mark.parametrize("preset", ["paper", "spectral-momentum"])
@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_optimizer_and_scheduler_state_resume_exactly(name: str, preset: str) -> None:
    k = STEPS // 2
    model = tiny_net()
    opt = agd(model, preset)
    sched = SCHEDULERS[name](opt)
    for i in range(STEPS):
        if i == k:
            saved = _save(model, opt, sched)
        backward(model, opt, i)
        opt.step()
        _sched_step(name, sched, i)
    straight, straight_lr = flat(model), opt.param_groups[0]["lr"]

    model_sd, opt_sd, sched_sd = _load(saved)
    fresh = tiny_net(seed=7)  # another process: other random weights, restored below
    fresh.load_state_dict(model_sd)
    opt2 = hyperfree.AGD(fresh, preset=preset)
    sched2 = SCHEDULERS[name](opt2)
    opt2.load_state_dict(opt_sd)
    sched2.load_state_dict(sched_sd)
    assert opt2.steps == k
    for i in range(k, STEPS):
        backward(fresh, opt2, i)
        opt2.step()
        _sched_step(name, sched2, i)
    assert torch.equal(flat(fresh), straight)
    assert opt2.param_groups[0]["lr"] == straight_lr
