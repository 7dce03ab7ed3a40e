"""train() on tiny in-memory data: the metrics record (keys, consistency with an independent
evaluation), resume exactness (2 epochs straight == 1 + resume 1, also from a mid-epoch Ctrl-C),
refusal to overwrite or to resume an incompatible/corrupt run, generic per-key stepper logging,
and one training step of every registered model through the harness."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from _train_helpers import (InterruptAt, tiny_config, tiny_image_bundle,
                            tiny_text_bundle)

from hyperfree.models import get_model_info, list_models
from hyperfree.train import optimizers
from hyperfree.train.steppers import Stepper, TorchStepper
from hyperfree.train import (CHECKPOINT_NAME, CheckpointError, TrainingInterrupted, read_metrics, train)
from hyperfree.train.losses import square_loss

torch.set_num_threads(1)


def _strip(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in records]


def test_record_has_all_keys_and_matches_independent_evaluation() -> None:
    bundle = tiny_image_bundle()
    history = train(tiny_config(epochs=2), data=bundle)
    assert [r["epoch"] for r in history.records] == [1, 2]
    last = history.records[-1]
    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "eta_mean", "eta_min",
                "eta_max", "rel_update", "seconds", "step"):
        assert key in last and math.isfinite(last[key]), key
    assert last["step"] == 8  # 64 samples / batch 16 * 2 epochs
    assert last["eta_min"] <= last["eta_mean"] <= last["eta_max"]
    assert 0 < last["rel_update"] < 1
    history.stepper.eval()  # the record evaluates where the stepper does: AGD's average
    model = history.model.eval()
    x = (bundle.test_x.float() / 255 - 0.5) / 0.3
    with torch.no_grad():
        logits = model(x)
    assert last["test_loss"] == pytest.approx(square_loss(logits, bundle.test_y).item(), rel=1e-5)
    acc = (logits.argmax(1) == bundle.test_y).double().mean().item()
    assert last["test_acc"] == pytest.approx(acc)


@pytest.mark.parametrize("optimizer", ["agd", "adam"])
def test_resume_after_one_epoch_is_exact(tmp_path: Path, optimizer: str) -> None:
    bundle = tiny_image_bundle()
    straight = train(tiny_config(epochs=2, optimizer=optimizer, out_dir=str(tmp_path / "a")),
                     data=bundle)
    train(tiny_config(epochs=1, optimizer=optimizer, out_dir=str(tmp_path / "b")), data=bundle)
    resumed = train(tiny_config(epochs=2, optimizer=optimizer, out_dir=str(tmp_path / "b"),
                                resume=True), data=bundle)
    assert _strip(resumed.records) == _strip(straight.records)
    assert _strip(read_metrics(tmp_path / "b")) == _strip(straight.records)
    for (name, a), b in zip(straight.model.state_dict().items(),
                            resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_ctrl_c_mid_epoch_checkpoints_and_resumes_exactly(tmp_path: Path) -> None:
    bundle = tiny_image_bundle()
    straight = train(tiny_config(epochs=2), data=bundle)
    cfg = tiny_config(epochs=2, out_dir=str(tmp_path))
    with pytest.raises(TrainingInterrupted) as info:
        train(cfg, callbacks=[InterruptAt(6)], data=bundle)  # epoch 2, batch 2 of 4
    assert info.value.checkpoint == tmp_path / CHECKPOINT_NAME
    assert info.value.checkpoint.is_file()
    assert len(read_metrics(tmp_path)) == 1
    resumed = train(cfg.replace(resume=True), data=bundle)
    assert _strip(resumed.records) == _strip(straight.records)
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)


def test_refuses_to_overwrite_or_resume_a_different_run(tmp_path: Path) -> None:
    bundle = tiny_image_bundle()
    train(tiny_config(epochs=1, out_dir=str(tmp_path)), data=bundle)
    before = (tmp_path / CHECKPOINT_NAME).read_bytes()
    with pytest.raises(ValueError, match="already holds a run"):
        train(tiny_config(epochs=1, out_dir=str(tmp_path)), data=bundle)
    with pytest.raises(ValueError, match="width=16 but this config has width=8"):
        train(tiny_config(epochs=2, width=8, out_dir=str(tmp_path), resume=True), data=bundle)
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() == before
    (tmp_path / CHECKPOINT_NAME).write_bytes(before[:100])
    with pytest.raises(CheckpointError, match="corrupt"):
        train(tiny_config(epochs=2, out_dir=str(tmp_path), resume=True), data=bundle)
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() == before[:100]


def test_every_logged_stepper_scalar_gets_mean_min_max() -> None:
    class Logger(TorchStepper):
        calls = 0

        def step(self, loss: torch.Tensor) -> dict[str, torch.Tensor]:
            super().step(loss)
            Logger.calls += 1
            return {"lr": torch.tensor(float(Logger.calls)), "lr@1": torch.tensor(-1.0)}

    def build(model: torch.nn.Module, args: optimizers.OptimArgs) -> Stepper:
        return Logger(model, torch.optim.SGD(model.parameters(), lr=0.01))

    optimizers.register_optimizer("logger", description="test stepper")(build)
    try:
        rec = train(tiny_config(epochs=1, optimizer="logger"),
                    data=tiny_image_bundle()).records[0]
    finally:
        optimizers._REGISTRY.unregister("logger")
    assert (rec["lr_mean"], rec["lr_min"], rec["lr_max"]) == (2.5, 1.0, 4.0)
    assert (rec["lr@1_mean"], rec["lr@1_min"], rec["lr@1_max"]) == (-1.0, -1.0, -1.0)
    assert "eta_mean" not in rec


def _tiny_kwargs(name: str) -> dict[str, Any]:
    """Smallest depth/width the model takes (None where it has no such flag); AGD if exact."""
    info = get_model_info(name)
    return {"width": None if info.default_width is None else 4,
            "depth": None if info.default_depth is None else max(info.min_depth, 1),
            "optimizer": "agd" if info.paper_exact else "adam"}


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_trains_four_steps(name: str) -> None:
    # four steps: under the default AGD an unnormalised network gets spectral-fresh, whose first
    # step only fills the momentum (its G needs a direction from an earlier step)
    if get_model_info(name).input_kind == "tokens":
        bundle = tiny_text_bundle()
    else:
        bundle = tiny_image_bundle(n_train=16, n_test=2, channels=3, size=32, classes=3)
    cfg = tiny_config(arch=name, epochs=1, limit_batches=4, train_bs=4, test_bs=2,
                      **_tiny_kwargs(name))
    torch.manual_seed(0)
    history = train(cfg, data=bundle)
    rec = history.records[0]
    assert rec["step"] == 4
    assert math.isfinite(rec["train_loss"]) and math.isfinite(rec["test_loss"])
    assert rec["rel_update"] > 0  # the sampled steps moved the weights
