"""The race (issues 9, 17): every AGD preset, untuned, against tuned AdamW and SGD and the
learning-rate-free peers at their defaults, on seven workloads; and the race's verdict.

Workloads (panels; Fashion-MNIST at batch 128 and square loss unless said):

.. code-block:: text

    fcn16      fcn depth 16 x width 512                 quick 2 epochs  full 5   gpu 10
    fcn32      fcn depth 32 x width 256 (AGD Figure 1)  quick 2 epochs  full 5   gpu 10
    conv       resnet_small (depth 1, width 16)         quick 2 epochs
               resnet18 (width 64)                                      full 2   gpu 6
    conv-long  the same network, 4x the epochs          quick 8 epochs  full 8   gpu 24
    gpt        gpt depth 4, width 128, 4 heads, context 64, batch 12, tinyshakespeare,
               cross-entropy, judged by test_loss (nats, whole test split)
                                                        quick 500 steps full 2000 gpu 2000
    gpt-long   the same GPT, 4x the steps               quick 2000      full 8000 gpu 8000
    lstm       char_lstm depth 2, width 256, context 64, batch 32, tinyshakespeare, judged
               by test_loss                              quick 1000 steps full 3000 gpu 3000
    finetune   the conv network trained by AdamW (lr 1e-3, cosine, 5% warmup) on classes 0-4
               for 2 epochs (run ``finetune-pretrain``, seed by seed), then trained on
               classes 5-9 from those weights (``--init-from``)  quick 2 epochs (each)

Contestants on every workload: ``agd-<preset>`` for every preset of
:data:`hyperfree.optim.PRESETS` (the presets are read at import, so a new preset joins by
itself; plain ``agd`` and ``agd-auto`` are the same builder as ``agd-<DEFAULT_PRESET>`` and are
not run twice); ``adamw`` over the half-decade grid :data:`ADAMW_GRID` (the conv workloads add
0.3 above it, because the best sat on 0.1; fine-tuning spans the same, :data:`FINETUNE_GRID`:
its users' 1e-5...1e-3 left the best on the edge) and ``sgd`` (momentum 0.9) over
:data:`SGD_GRID`, both with ``--schedule cosine --warmup-steps W``, ``W`` = 5% of the run's
optimiser steps, AdamW with weight decay 0.01 (torch's default) on images and, as language-model
users set it, weight decay 0.1 and gradient clipping at norm 1 on text; the peers of
:data:`PEERS` at their defaults; on ``fcn32`` also the Figure 1 baselines at PyTorch defaults
(``adam-default``: Adam 1e-3, ``sgd-default``: SGD 0.1, constant, no momentum). Profiles
``quick`` (1 seed), ``full`` and ``gpu`` (3 seeds); ``smoke`` is ``smoke_of(quick)`` with the
FCNs at width 64 (tests). Not in ``hyperfree experiment all`` (``in_all=False``). On the 2-core
CPU the quick plan runs the grids on 1 seed and then the AGD presets, the best grid points and
the peers on 3 (``--seeds 3 --only PATTERN``; ``docs/race.md`` has the commands and the wall
time).

The verdict (:func:`race_verdict`, in :mod:`._race_verdict`) is a pure function of the
aggregated rows: each preset's margin to the best AdamW of the grid (:func:`margin`), its worst
case over the workloads, the preset the race chooses (best worst case), and the issues' targets
for the current default (:data:`LONG_HORIZON`: the margin at the long horizon is not smaller
than at the short; "≥ AdamW" only where the runs bracket AdamW's best learning rate).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from hyperfree.train.transfer import parse_classes

from ._race_verdict import (DEFAULT_GROUP, FIG1_DEFAULTS, LONG_HORIZON, LR_FREE_PEERS,
                            METRICS, PRESET_GROUPS, bracket, error, judge, margin)
from ._spec import Experiment, Row, RunSpec, Verdict, register_experiment
from .suite import profiles

__all__ = ["ADAMW_GRID", "FINETUNE_GRID", "SGD_GRID", "PEERS", "LR_FREE_PEERS", "FIG1_DEFAULTS",
           "WARMUP_FRACTION", "PRESET_GROUPS", "DEFAULT_GROUP", "METRICS", "EXPECTED",
           "LONG_HORIZON", "warmup_steps", "race_specs", "error", "margin", "bracket",
           "race_verdict"]

#: AdamW's learning rates: half-decades, so that the best is not between two points a decade
#: apart (the conv workloads add 0.3: their best sat on 0.1)
ADAMW_GRID: tuple[float, ...] = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
#: fine-tuning's learning rates: the whole grid, not only the 1e-5...1e-3 fine-tuning's users
#: span: with a new head on new classes the best sat on 1e-3's edge, then on 3e-3 and 1e-2
FINETUNE_GRID: tuple[float, ...] = ADAMW_GRID
#: SGD's (momentum 0.9): decades, then 0.3 and 1.0 above them (the best sat on 0.1's edge on
#: every workload but the GPT, then on 0.3's on five; the quick race runs 1.0 only there)
SGD_GRID: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 0.3, 1.0)
#: the peers at their documented defaults (no flags): the learning-rate-free ones and Muon
PEERS: tuple[str, ...] = (*LR_FREE_PEERS, "muon")
WARMUP_FRACTION = 0.05
_FASHION_MNIST_TRAIN = 60_000  # training images; batches per epoch = ceil(60000 / batch)
_BS = 128
_TEXT_ADAMW = {"weight_decay": 0.1, "clip_grad_norm": 1.0}  # nanoGPT's, and most LM recipes'
_PRETRAIN = "finetune-pretrain"


# ---------------------------------------------------------------- the runs
def warmup_steps(overrides: Mapping[str, Any]) -> int:
    """``W``: :data:`WARMUP_FRACTION` of the run's optimiser steps (``steps``, else ``epochs``
    × ceil(n / ``train_bs``) with n the Fashion-MNIST training images of its ``classes``),
    rounded half up, at least 1."""
    total = overrides.get("steps")
    if total is None:
        n = _FASHION_MNIST_TRAIN
        if overrides.get("classes") is not None:
            n = n * len(parse_classes(overrides["classes"], 10)) // 10
        per_epoch = math.ceil(n / int(overrides.get("train_bs", _BS)))
        total = int(overrides["epochs"]) * per_epoch
    return max(1, int(WARMUP_FRACTION * int(total) + 0.5))


def _contestants(panel: str, base: Mapping[str, Any], grid: Sequence[float],
                 adamw: Mapping[str, Any]) -> list[RunSpec]:
    sched = {"schedule": "cosine", "warmup_steps": warmup_steps(base)}
    out = [RunSpec(f"{panel}-{g}", g, {**base, "optimizer": g}, panel=panel)
           for g in PRESET_GROUPS]
    out += [RunSpec(f"{panel}-adamw-lr{lr:g}", "adamw",
                    {**base, **sched, **adamw, "optimizer": "adamw", "lr": lr}, x=lr,
                    panel=panel) for lr in grid]
    out += [RunSpec(f"{panel}-sgd-lr{lr:g}", "sgd",
                    {**base, **sched, "optimizer": "sgd", "lr": lr, "momentum": 0.9}, x=lr,
                    panel=panel) for lr in SGD_GRID]
    out += [RunSpec(f"{panel}-{p}", p, {**base, "optimizer": p}, panel=panel) for p in PEERS]
    if panel == "fcn32":
        out += [RunSpec(f"{panel}-{g}", g, {**base, "optimizer": opt, "lr": lr}, panel=panel)
                for g, opt, lr in FIG1_DEFAULTS]
    return out


def _finetune(conv: Mapping[str, Any]) -> list[RunSpec]:
    """The pre-training run (AdamW on classes 0-4) and the contestants on classes 5-9."""
    pre = {**conv, "classes": "0-4"}
    pretrain = RunSpec(_PRETRAIN, "pretrain",
                       {**pre, "optimizer": "adamw", "lr": 1e-3, "schedule": "cosine",
                        "warmup_steps": warmup_steps(pre)}, panel="finetune")
    base = {**conv, "classes": "5-9", "init_from": f"@{_PRETRAIN}"}
    return [pretrain, *_contestants("finetune", base, FINETUNE_GRID, {})]


def race_specs(fcn_epochs: int, conv: Mapping[str, Any], gpt_steps: int, lstm_steps: int
               ) -> tuple[RunSpec, ...]:
    """Every contestant on the seven workloads, workload by workload."""
    fm = {"dataset": "fashion-mnist"}
    text = {"dataset": "tinyshakespeare"}
    gpt = {"arch": "gpt", **text, "depth": 4, "width": 128, "heads": 4, "seq_len": 64,
           "train_bs": 12}
    conv = {**fm, **conv}
    workloads = (
        ("fcn16", {"arch": "fcn", **fm, "depth": 16, "width": 512, "epochs": fcn_epochs},
         ADAMW_GRID, {}),
        ("fcn32", {"arch": "fcn", **fm, "depth": 32, "width": 256, "epochs": fcn_epochs},
         ADAMW_GRID, {}),
        ("conv", conv, (*ADAMW_GRID, 0.3), {}),
        ("conv-long", {**conv, "epochs": 4 * conv["epochs"]}, (*ADAMW_GRID, 0.3), {}),
        ("gpt", {**gpt, "steps": gpt_steps}, ADAMW_GRID, _TEXT_ADAMW),
        ("gpt-long", {**gpt, "steps": 4 * gpt_steps}, ADAMW_GRID, _TEXT_ADAMW),
        ("lstm", {"arch": "char_lstm", **text, "depth": 2, "width": 256, "seq_len": 64,
                  "train_bs": 32, "steps": lstm_steps}, ADAMW_GRID, _TEXT_ADAMW))
    specs = [s for panel, base, grid, adamw in workloads
             for s in _contestants(panel, base, grid, adamw)]
    return tuple(specs + _finetune(conv))


def _narrow(specs: tuple[RunSpec, ...]) -> tuple[RunSpec, ...]:
    """The smoke runs with the FCNs at width 64: the wiring is the same, and AGD's orthogonal
    initialisation of sixteen 512 x 512 matrices alone took 0.5 s a run."""
    return tuple(RunSpec(s.label, s.group, {**s.overrides, "width": 64}, s.x, s.y, s.panel)
                 if s.overrides.get("arch") == "fcn" else s for s in specs)


_SMALL_CONV = {"arch": "resnet_small", "depth": 1, "width": 16, "epochs": 2}
_RESNET18 = {"arch": "resnet18", "width": 64}
_RUNS = profiles(race_specs(2, _SMALL_CONV, 500, 1000),
                 race_specs(5, {**_RESNET18, "epochs": 2}, 2000, 3000),
                 race_specs(10, {**_RESNET18, "epochs": 6}, 2000, 3000))
_RUNS["smoke"] = _narrow(_RUNS["smoke"])
#: (panel, group) of every contestant, in plan order: what the verdict expects to find
EXPECTED: tuple[tuple[str, str], ...] = tuple(dict.fromkeys((s.panel, s.group)
                                                            for s in _RUNS["quick"]
                                                            if s.group != "pretrain"))


def race_verdict(rows: Sequence[Row], *, presets: Sequence[str] = PRESET_GROUPS,
                 default: str = DEFAULT_GROUP,
                 metrics: Mapping[str, tuple[str, bool]] = METRICS,
                 expected: Sequence[tuple[str, str]] = EXPECTED) -> Verdict:
    """The race's verdict on ``rows`` (:func:`hyperfree.experiments._race_verdict.judge`):
    every preset's margin to the best AdamW, the preset chosen, and the issues' targets for
    ``default``; ``expected`` lists the (panel, group) pairs of the plan, those without rows
    are named as missing."""
    return judge(rows, expected, presets=presets, default=default, metrics=metrics)


register_experiment(Experiment(
    name="race", title="The race: every AGD preset, untuned, vs tuned AdamW/SGD and the "
                       "learning-rate-free peers",
    claim="Issues 9 and 17's targets: the default AGD, with no tuning, is at least as good as "
          "AdamW tuned over a half-decade learning-rate grid (cosine schedule, 5% warmup, "
          "weight decay and clipping as its users set them) on every workload (mean over "
          "seeds), at least as good as every learning-rate-free peer at its defaults, keeps "
          "its margin at the long horizon (conv-long, gpt-long), never diverges, and trains "
          "the 32-layer FCN where Adam 1e-3 and SGD 0.1 at PyTorch defaults do not. The race "
          "also chooses the default: the preset with the best worst-case margin to the tuned "
          "AdamW.",
    figure="bars", verdict=race_verdict, x_label="learning rate", log_x=True,
    runs=_RUNS, metrics=METRICS, in_all=False, page=True, cost_unit=DEFAULT_GROUP,
    notes="Fashion-MNIST (square loss, batch 128) for fcn16 (16 x 512), fcn32 (32 x 256), "
          "conv and conv-long; finetune: the conv network pre-trained by AdamW on classes 0-4, "
          "then trained on classes 5-9; the GPT (depth 4, width 128, 4 heads, context 64, "
          "batch 12) and the char LSTM (depth 2, width 256, context 64, batch 32) on "
          "tinyshakespeare with cross-entropy, judged by the test loss in nats on the whole "
          "test split. AdamW lr in {1e-5, 3e-5, ..., 1e-1} (conv: also 0.3), weight decay 0.01 "
          "(text: 0.1 and clipping at norm 1); SGD momentum 0.9 lr in "
          f"{{{', '.join(f'{lr:g}' for lr in SGD_GRID)}}}; both cosine with W = 5% of the run's "
          "steps of linear warmup; peers at their defaults. quick: FCNs, resnet_small (depth 1, "
          "width 16) and finetune 2 epochs, conv-long 8, GPT 500 steps, gpt-long 2000, LSTM "
          "1000, 1 seed; full: FCNs 5 epochs, resnet18 (width 64) 2 epochs (long 8), GPT 2000 "
          "steps (long 8000), LSTM 3000, 3 seeds; gpu: FCNs 10 epochs, resnet18 6 (long 24), "
          "GPT 2000 (long 8000), LSTM 3000, 3 seeds. Not part of `hyperfree experiment all`: "
          "run it by name."))
