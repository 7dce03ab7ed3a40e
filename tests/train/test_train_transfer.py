"""Fine-tuning runs: ``classes`` keeps some labels, ``init_from`` starts from another run's
weights, and the learning-rate optimisers clip gradients with ``clip_grad_norm``.

* ``classes="0-1"``: every training and test example the run sees has label 0 or 1 (and the
  labels are not renumbered); a bad spec or a text dataset is one ValueError.
* ``init_from``: a run started from another run's directory begins at its weights (an AdamW step
  of lr 1e-30 leaves them bitwise equal), with a fresh optimiser; weights of another
  architecture are one CheckpointError naming the flags.
* ``clip_grad_norm``: SGD's displacement is ``lr · min(‖g‖, C)`` in global norm; AGD (whose step
  is normalised) refuses the flag.
* The experiment runner resolves ``init_from="@LABEL"`` to that run's directory for the same
  seed and plans it first, also when ``only`` selects only the fine-tuning run.
Run: ``pytest tests/train/test_train_transfer.py``.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hyperfree.experiments._spec import Experiment, RunSpec
from hyperfree.experiments.runner import plan_runs
from hyperfree.train import CheckpointError, OptimArgs, build_optimizer, train
from hyperfree.train.transfer import parse_classes, select_classes

from _train_helpers import tiny_config, tiny_image_bundle, tiny_text_bundle


def test_classes_keep_only_those_labels():
    bundle = tiny_image_bundle(n_train=200, n_test=80)
    assert set(bundle.train_y.tolist()) == {1, 2}  # brightness classes of uniform noise
    kept = select_classes(bundle, "2-3")
    assert set(kept.train_y.tolist()) == {2} and set(kept.test_y.tolist()) <= {2}
    assert kept.train_x.shape[0] == int((bundle.train_y == 2).sum()) > 0
    assert parse_classes("5,7-8", 10) == (5, 7, 8)
    for bad in ("3-1", "a", "0-12"):
        with pytest.raises(ValueError, match="classes"):
            parse_classes(bad, 10)
    with pytest.raises(ValueError, match="drop --classes"):
        select_classes(tiny_text_bundle(), "0-1")


def test_a_run_on_some_classes_trains_and_tests_on_them_only():
    bundle = tiny_image_bundle(n_train=200, n_test=80)
    record = train(tiny_config(epochs=1, classes="2-3", optimizer="sgd", lr=0.01, train_bs=16),
                   data=bundle).records[-1]
    n_train = int((bundle.train_y == 2).sum())
    n_test = int((bundle.test_y == 2).sum())
    assert record["step"] == math.ceil(n_train / 16) < math.ceil(200 / 16)
    hits = record["test_acc"] * n_test  # the accuracy is over the kept test examples
    assert hits == pytest.approx(round(hits), abs=1e-6) and n_test < 80


def test_init_from_starts_at_the_other_runs_weights(tmp_path):
    bundle = tiny_image_bundle()
    first = train(tiny_config(epochs=1, out_dir=str(tmp_path / "a")), data=bundle)
    second = train(tiny_config(epochs=1, optimizer="adamw", lr=1e-30, weight_decay=0.0,
                               init_from=str(tmp_path / "a")), data=bundle)
    for (name, p), q in zip(first.model.named_parameters(), second.model.parameters()):
        assert torch.equal(p, q), name
    other = tiny_config(epochs=1, width=8, init_from=str(tmp_path / "a"))
    with pytest.raises(CheckpointError, match="--init-from needs a run of the same"):
        train(other, data=bundle)


def test_clip_grad_norm_bounds_sgd_and_is_refused_by_agd():
    torch.manual_seed(0)
    model = nn.Linear(6, 3)
    before = [p.detach().clone() for p in model.parameters()]
    stepper = build_optimizer("sgd", model, OptimArgs(lr=1.0, clip_grad_norm=0.5))
    loss = (model(torch.randn(4, 6)) * 50).square().mean()
    grads = torch.autograd.grad(loss, list(model.parameters()), retain_graph=True)
    assert math.sqrt(sum(float(g.square().sum()) for g in grads)) > 0.5
    stepper.step(loss)
    moved = math.sqrt(sum(float((p.detach() - b).square().sum())
                          for p, b in zip(model.parameters(), before)))
    assert moved == pytest.approx(0.5, rel=1e-5)
    with pytest.raises(ValueError, match="clip-grad-norm"):
        build_optimizer("agd", nn.Linear(3, 3), OptimArgs(clip_grad_norm=1.0))


def test_runner_plans_the_run_a_fine_tuning_run_starts_from(tmp_path):
    pre = RunSpec("pre", "pre", {"optimizer": "sgd", "classes": "0-4", "epochs": 1})
    ft = RunSpec("ft", "agd", {"optimizer": "agd", "classes": "5-9", "epochs": 1,
                               "init_from": "@pre"})
    exp = Experiment(name="transfer-test", title="t", claim="c", figure="bars",
                     runs={"quick": (pre, ft)}, verdict=lambda rows: None)
    plan = plan_runs(exp, "quick", seeds=2, runs_dir=tmp_path, only=["ft"])
    assert [(r.spec.label, r.seed) for r in plan] == [("pre", 0), ("pre", 1), ("ft", 0),
                                                      ("ft", 1)]
    for run in plan[2:]:
        assert run.config.init_from == str(plan[run.seed].run_dir)
