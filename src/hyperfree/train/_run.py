"""One run's bookkeeping for :func:`~hyperfree.train.loop.train`: ``_Run`` holds the model, the
stepper, the loaders, the position (epoch, batch, step) and the accumulators, and does one
segment's steps, the records, the checkpoints and the divergence checks (the loop's docstring
has the algorithm)."""
from __future__ import annotations

import itertools
import math
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from . import fsdp
from .build import build_model, default_loss
from .callbacks import Callback, StepInfo
from .checkpoint import CHECKPOINT_NAME, CheckpointError, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig
from .distributed import DistContext, reduce_min
from .evaluation import call_hook, evaluate
from .length import RunLength
from .losses import correct_count, cross_entropy, get_loss
from .optimizers import OptimArgs, build_optimizer, divergence_hint
from .outcome import TrainingDiverged
from .progress import Progress
from .record import append_metrics
from .resume import exactness_settings
from .rundir import writing
from .schedules import schedule_stepper
from .stats import EpochStats, relative_update, sampled_steps, weight_tensors
from .tally import WarningTally
from .transfer import load_initial_weights

#: training batches BatchNorm statistics are recomputed from at averaged weights (the
#: Schedule-Free README's "about 50")
CALIBRATION_BATCHES = 50


class _Run:
    """Bookkeeping of one run: model, stepper, loaders, position and accumulators."""

    def __init__(self, cfg: TrainConfig, dist: DistContext, device: torch.device,
                 bundle: Any, callbacks: Sequence[Callback], run_dir: Path | None,
                 tally: WarningTally) -> None:
        self.cfg, self.dist, self.device, self.run_dir = cfg, dist, device, run_dir
        self.tally = tally
        self.callbacks = list(callbacks)
        self.loss_name = cfg.loss or default_loss(bundle.info)
        self.loss_fn = get_loss(self.loss_name)
        self.text = bundle.info.kind == "text"
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg, bundle.info).to(device)
        args = OptimArgs(lr=cfg.lr, momentum=cfg.momentum, gain=cfg.gain,
                         weight_decay=cfg.weight_decay, clip_grad_norm=cfg.clip_grad_norm)
        self.stepper = build_optimizer(cfg.optimizer, self.model, args)
        if cfg.init_from is not None:  # fine-tuning: another run's weights, a fresh optimiser
            load_initial_weights(self.model, cfg.init_from)
        else:
            self.stepper.init_weights()
        if cfg.fsdp:  # shard the initialised model; the optimiser sees the shards
            self.stepper = fsdp.shard(self.model, lambda: build_optimizer(
                cfg.optimizer, self.model, args), dist.enabled)
        common = dict(rank=dist.rank, world_size=dist.world_size, num_workers=cfg.num_workers)
        # Under DDP a short last batch could leave a rank with an empty share: drop it there.
        self.train_loader = bundle.train_loader(cfg.train_bs, seed=cfg.seed,
                                                drop_last=dist.enabled, **common)
        self.test_loader = bundle.test_loader(cfg.test_bs, **common)
        self._calibration_loader = lambda: bundle.train_loader(  # seed + 1: its own order
            cfg.train_bs, seed=cfg.seed + 1, drop_last=dist.enabled, **common)
        self._calibration: Any = None
        self.records: list[dict[str, Any]] = []
        self.epoch = self.batch = self.global_step = 0
        self.stats = EpochStats(device)
        self.epoch_t0 = time.perf_counter()
        self.at_boundary = True
        self.train_seconds = 0.0
        self.forward: nn.Module = self.stepper.module
        self.epoch_len = self._limit(self.train_loader)
        if self.epoch_len == 0:
            raise ValueError(f"the training set gives no batch of train_bs={cfg.train_bs}; use a "
                             "smaller --train-bs")
        self.length = RunLength(cfg.epochs, cfg.steps, self.epoch_len, cfg.eval_every)
        if self.length.eval_every != cfg.eval_every:  # a step-counted run's default records
            self.cfg = cfg = cfg.replace(eval_every=self.length.eval_every)
        self.stepper = schedule_stepper(self.stepper, cfg.schedule, cfg.warmup_steps,
                                        self.length.max_steps)
        self.progress = Progress(enabled=cfg.progress and dist.is_main,
                                 epochs=self.length.max_epochs, auto=self.length.auto,
                                 total_steps=self.length.max_steps)
        self._open: tuple[int, Any] | None = None  # (epoch, its batch iterator at self.batch)
        self.checked_step = 0  # the divergence check has seen every loss up to this step
        self.saved: Path | None = None  # the last checkpoint written (or resumed from)

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Load a checkpoint's model, stepper, position, accumulators and RNG state."""
        try:
            if self.cfg.fsdp:
                fsdp.load_state(self.model, self.stepper, ckpt["model"], ckpt["stepper"])
            else:
                self.model.load_state_dict(ckpt["model"])
                self.stepper.load_state_dict(ckpt["stepper"])
            self.epoch, self.batch = int(ckpt["epoch"]), int(ckpt["batch"])
            self.global_step = self.checked_step = int(ckpt["global_step"])
            self.stats.load_state_dict(ckpt["stats"])
            self.records = [dict(r) for r in ckpt["metrics"]]
            set_rng_state(ckpt["rng"])
        except (KeyError, IndexError, RuntimeError, TypeError, ValueError) as exc:
            where = self.run_dir / CHECKPOINT_NAME if self.run_dir else "the checkpoint"
            raise CheckpointError(f"{where} does not fit this run ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0] if str(exc) else '-'}); start a "
                                  "new run with --out") from None
        self.saved = self.run_dir / CHECKPOINT_NAME if self.run_dir else None

    def wrap_ddp(self) -> None:
        """Wrap the forward module in DDP, unless the stepper averages gradients itself."""
        if self.cfg.fsdp:  # sharded already: no replica to synchronise
            return
        if self.dist.enabled and not getattr(self.stepper, "syncs_gradients", False):
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward = DistributedDataParallel(self.stepper.module, device_ids=ids)

    def _limit(self, loader: Any) -> int:
        n = len(loader)
        return n if self.cfg.limit_batches is None else min(n, self.cfg.limit_batches)

    def payload(self) -> dict[str, Any]:
        stats = self.stats.state_dict()
        stats["seconds"] = time.perf_counter() - self.epoch_t0
        model, stepper = self.model.state_dict(), self.stepper.state_dict()
        if self.cfg.fsdp:  # whole tensors (a collective: every rank builds the payload)
            model, stepper = fsdp.full_state(model), fsdp.full_state(stepper)
        return {"model": model, "stepper": stepper,
                "epoch": self.epoch, "batch": self.batch, "global_step": self.global_step,
                "stats": stats, "rng": rng_state(), "config": self.cfg.to_dict(),
                "metrics": self.records,
                "exactness": exactness_settings(self.device, self.dist)}

    def save(self) -> Path | None:
        """Checkpoint (rank 0, if there is a run dir); TrainingDiverged instead of saving
        non-finite weights or an epoch whose loss was not finite."""
        self.check_finite()
        payload = self.payload() if self.cfg.fsdp and self.run_dir is not None else None
        if self.run_dir is None or not self.dist.is_main:
            return None
        path = self.run_dir / CHECKPOINT_NAME
        with writing(path, self.kept()):
            save_checkpoint(path, payload or self.payload())
        self.saved = path
        return path

    def kept(self) -> str:
        """What is on disk if the run stops now: the last good checkpoint, or nothing."""
        return (f"the last good checkpoint ({self.saved}) is kept" if self.saved is not None
                else "nothing was saved")

    def check_finite(self, loss_finite: bool | None = None) -> None:
        """TrainingDiverged unless every loss since the epoch began (``loss_finite``, if the
        caller already synced it) and every model tensor is finite. One host sync."""
        flags = fsdp.local_finite(self.model) if self.cfg.fsdp else \
            [torch.isfinite(t).all() for t in self.model.state_dict().values()
             if t.is_floating_point()]
        if loss_finite is None:
            flags.append(torch.isfinite(self.stats.loss_sum))
        elif not loss_finite:
            raise self.diverged("the training loss is not finite")
        ok = torch.stack(flags).all()
        if self.cfg.fsdp:  # each rank saw its shards only: decide together
            ok = reduce_min(ok.to(torch.int32), self.dist)
        if not bool(ok):
            raise self.diverged("the training loss or the weights are not finite")

    def check_loss(self, running_loss: float | None) -> None:
        """The periodic divergence check at a host sync (single process only: under DDP the
        ranks check together at the epoch's end, so that none stops alone)."""
        if self.dist.enabled:
            return
        finite = (math.isfinite(running_loss) if running_loss is not None
                  else bool(torch.isfinite(self.stats.loss_sum)))
        if not finite:
            raise self.diverged("the training loss is not finite")
        self.checked_step = self.global_step

    def diverged(self, what: str) -> TrainingDiverged:
        return TrainingDiverged(
            f"training diverged in epoch {self.epoch + 1} (steps {self.checked_step + 1}-"
            f"{self.global_step}): {what}; {self.kept()}. "
            f"{_capital(divergence_hint(self.cfg.optimizer))}", self.saved, self.epoch)

    def finished(self) -> bool:
        """Whether the run is done: its epochs or steps taken, or (auto) the loss has stopped falling."""
        return self.length.finished(self.global_step, self.batch, self.records)

    def record_due(self) -> bool:
        """Whether the run stopped (Ctrl-C) at a record point before it recorded there."""
        if self.global_step == 0 or (self.records and
                                     self.records[-1]["step"] >= self.global_step):
            return False
        every = self.length.eval_every
        return bool(every and self.global_step % every == 0) or self.batch >= self.epoch_len \
            or self.global_step >= self.length.max_steps

    def segment_end(self) -> int:
        """The batch (exclusive) of this epoch where training stops for the next record."""
        return self.length.segment_end(self.batch, self.global_step)

    def _batches(self, n: int) -> Any:
        """This epoch's batch iterator, positioned at ``self.batch``."""
        if self._open is None or self._open[0] != self.epoch:
            self.train_loader.set_epoch(self.epoch)
            batches = itertools.islice(iter(self.train_loader), n)
            for _ in range(self.batch):  # resume mid-epoch: replay the order, skip the work
                next(batches)
            self._open = (self.epoch, batches)
        return self._open[1]

    def train_epoch(self, stop: int | None = None) -> None:
        """Steps ``self.batch .. stop-1`` of epoch ``self.epoch`` (default: to the epoch's end;
        no host sync but the bar's)."""
        cfg, n = self.cfg, self.epoch_len
        stop = n if stop is None else stop
        sample = sampled_steps(n, cfg.rel_update_samples)
        if sample and cfg.fsdp:
            fsdp.reshard(self.model)  # capture the sharded parameters, not transient gathers
        weights = weight_tensors(self.model) if sample else []
        batches = self._batches(n)
        self.epoch_t0 = time.perf_counter() - self.stats.seconds
        self.forward.train()
        call_hook(self.stepper, "train")
        self.progress.start(self.epoch, n, self.batch, step=self.global_step)
        shown = self.batch
        for i, (x, y) in zip(range(self.batch, stop), batches):
            self.at_boundary = False
            before = [w.detach().clone() for w in weights] if i in sample else None
            logits = self.forward(x)
            loss = self.loss_fn(logits, y)
            logs = self.stepper.step(loss)
            self.stats.add_batch(loss, correct_count(logits.detach(), y), y.numel())
            self.stats.add_scalars(logs)
            if before is not None:
                self.stats.add_rel_update(relative_update(before, weights))
            self.batch, self.global_step = i + 1, self.global_step + 1
            self.at_boundary = True
            if self.batch % cfg.log_every == 0 or self.batch == n:  # the loop's host sync
                values = self.stats.running(logs) if self.progress.active else None
                if values is not None:
                    self.progress.update(self.batch - shown, values)
                    shown = self.batch
                self.check_loss(values["loss"] if values is not None else None)
            for cb in self.callbacks:
                cb.on_step_end(StepInfo(self.epoch, i, self.global_step, loss.detach(), logs))
        self.progress.close()
        self.train_seconds = time.perf_counter() - self.epoch_t0

    def evaluate(self) -> dict[str, float]:
        """Test loss and accuracy (:func:`~hyperfree.train.evaluation.evaluate`) over at most
        ``limit_batches`` test batches; on text over every test window, in nats."""
        loss_fn = cross_entropy if self.text else self.loss_fn
        n = len(self.test_loader) if self.text else self._limit(self.test_loader)
        return evaluate(self.stepper, self.test_loader, n, loss_fn, self.device, self.dist,
                        calibration=self.calibration_batches)

    def calibration_batches(self) -> Any:
        """The inputs BatchNorm statistics are recomputed from at averaged weights: the first
        :data:`CALIBRATION_BATCHES` batches of a training loader of their own (seed + 1), the
        same ones at every record."""
        if self._calibration is None:
            self._calibration = self._calibration_loader()
        self._calibration.set_epoch(0)
        return (x for x, _ in itertools.islice(iter(self._calibration), CALIBRATION_BATCHES))

    def end_segment(self) -> dict[str, Any]:
        """Record at the epoch's end (then advance to the next epoch) or mid-epoch.

        A mid-epoch record's ``epoch`` is fractional: completed epochs + batch / batches.
        """
        if self.batch >= self.epoch_len:
            return self.end_epoch()
        return self._record(self.epoch + self.batch / self.epoch_len, next_epoch=False)

    def end_epoch(self) -> dict[str, Any]:
        """Summarise, record, checkpoint; advance to the next epoch."""
        return self._record(self.epoch + 1, next_epoch=True)

    def _record(self, epoch: float, *, next_epoch: bool) -> dict[str, Any]:
        record: dict[str, Any] = {"epoch": epoch, "step": self.global_step}
        record.update(self.stats.summary("train", self.dist))
        self.check_finite(math.isfinite(record["train_loss"]))  # reduced: every rank agrees
        self.checked_step = self.global_step
        record.update(self.evaluate())
        record["train_seconds"] = self.train_seconds
        record["seconds"] = time.perf_counter() - self.epoch_t0
        self.records.append(record)
        if next_epoch:
            self.epoch, self.batch, self._open = self.epoch + 1, 0, None
        self.stats = EpochStats(self.device)
        self.epoch_t0 = time.perf_counter()
        if self.run_dir is not None and self.dist.is_main:
            with writing(self.run_dir / "metrics.jsonl", self.kept()):
                append_metrics(self.run_dir, record)
        if self.run_dir is not None and (self.dist.is_main or self.cfg.fsdp):
            self.save()  # under FSDP every rank gathers its shards for rank 0's checkpoint
        self.tally.flush(f"in epoch {record['epoch']}")
        for cb in self.callbacks:
            cb.on_epoch_end(math.ceil(record["epoch"]) - 1, record)
        return record


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]
