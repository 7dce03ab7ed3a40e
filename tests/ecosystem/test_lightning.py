"""AGD under a real Lightning ``Trainer`` (skipped unless ``lightning`` is installed: the
``ecosystem`` extra).

* Resume is exact: 1 epoch, ``trainer.save_checkpoint``, then a *new* module (other random
  draws) and a new Trainer ``fit(..., ckpt_path=...)`` to 2 epochs gives the same weights, bit
  for bit, as 2 epochs straight. AGD's init sits in the module's ``__init__`` (the README's
  recipe); Lightning restores the weights afterwards, then calls ``configure_optimizers``, then
  restores the optimiser and scheduler states, so nothing wipes them.
* Lightning's ``lr_scheduler`` config and ``LearningRateMonitor`` read ``group["lr"]``: the
  monitored lr follows the StepLR schedule, and η logged from ``group["eta"]`` after each step
  is positive and changes.

Run: .venv/bin/python -m pytest -q tests/ecosystem/test_lightning.py
"""
from __future__ import annotations

import csv
import functools
import importlib.util
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

import hyperfree

from _ecosystem_helpers import batch, flat, tiny_net

# checked without importing: lightning takes seconds to import, paid only by a worker that runs
# these tests (not at collection)
pytestmark = pytest.mark.skipif(importlib.util.find_spec("lightning") is None,
                                reason="needs lightning: pip install 'hyperfree[ecosystem]'")


@functools.cache
def _lightning() -> Any:
    import lightning.pytorch

    return lightning.pytorch


def AGDModule(seed: int = 0, schedule: bool = False) -> Any:
    """An instance of :func:`_module_class`."""
    return _module_class()(seed, schedule)


@functools.cache
def _module_class() -> type:
    L = _lightning()

    class _AGDModule(L.LightningModule):
        """The README's recipe: AGD's init where the model is built, AGD in
        configure_optimizers."""

        def __init__(self, seed: int, schedule: bool) -> None:
            super().__init__()
            self.net = tiny_net(seed)
            hyperfree.optim.init_weights(self.net)
            self.schedule = schedule

        def training_step(self, data: Any, index: int) -> torch.Tensor:
            x, y = data
            return ((self.net(x) - y) ** 2).mean()

        def on_train_batch_end(self, outputs: Any, data: Any, index: int) -> None:
            self.log("eta", self.optimizers().param_groups[0]["eta"], on_step=True)

        def configure_optimizers(self) -> Any:
            opt = hyperfree.AGD(self.net, preset="spectral-momentum")
            if not self.schedule:
                return opt
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    return _AGDModule


def _loader() -> torch.utils.data.DataLoader:
    xs, ys = zip(*(batch(i) for i in range(3)))
    data = torch.utils.data.TensorDataset(torch.cat(xs), torch.cat(ys))
    return torch.utils.data.DataLoader(data, batch_size=12, shuffle=False)


def _trainer(epochs: int, **kw: Any) -> Any:
    opts: dict[str, Any] = dict(max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
                                enable_checkpointing=False, enable_progress_bar=False,
                                enable_model_summary=False)
    opts.update(kw)
    return _lightning().Trainer(**opts)


def _fit(trainer: Any, module: Any, **kw: Any) -> None:
    with warnings.catch_warnings():  # Lightning's advice on workers and small logs
        warnings.simplefilter("ignore")
        trainer.fit(module, _loader(), **kw)


@pytest.mark.parametrize("schedule", [False, True])
def test_lightning_resume_equals_never_stopping(tmp_path: Path, schedule: bool) -> None:
    straight = AGDModule(schedule=schedule)
    _fit(_trainer(2), straight)

    first = AGDModule(schedule=schedule)
    trainer = _trainer(1)
    _fit(trainer, first)
    trainer.save_checkpoint(tmp_path / "one.ckpt")
    assert not torch.equal(flat(first), flat(straight))

    resumed = AGDModule(seed=99, schedule=schedule)  # a new process: other random draws
    trainer = _trainer(2)
    _fit(trainer, resumed, ckpt_path=str(tmp_path / "one.ckpt"))
    assert trainer.optimizers[0].steps == 6
    assert torch.equal(flat(resumed), flat(straight))


def test_lr_monitor_and_scheduler_config_read_agd_lr(tmp_path: Path) -> None:
    from lightning.pytorch.callbacks import LearningRateMonitor
    from lightning.pytorch.loggers import CSVLogger

    logger = CSVLogger(tmp_path, name="run", version=0)
    trainer = _trainer(1, logger=logger, log_every_n_steps=1,
                       callbacks=[LearningRateMonitor(logging_interval="step")])
    _fit(trainer, AGDModule(schedule=True))
    with open(tmp_path / "run" / "version_0" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    lrs = [float(r["lr-AGD"]) for r in rows if r.get("lr-AGD")]
    etas = [float(r["eta"]) for r in rows if r.get("eta")]
    assert lrs == [1.0, 0.5, 0.25]
    assert len(etas) == 3 and all(e > 0 for e in etas) and len(set(etas)) == 3
