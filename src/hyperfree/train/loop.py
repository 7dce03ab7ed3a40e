"""The training loop: ``train(cfg, callbacks=...) -> History``.

One run, in the code's symbols::

    torch.manual_seed(seed); model = create_model(arch, ...); stepper = build_optimizer(...)
    stepper.init_weights()                       # AGD: orthogonal init (Bernstein et al. 2023)
    for epoch e, until `epochs` epochs or `steps` steps are done:  # resumes at (epoch, batch)
        for (x, y) in train batches of epoch e:   # order/augmentation/text offset = f(seed, e)
            loss = loss_fn(stepper.module(x), y)  # square loss or cross-entropy (losses.py)
            logs = stepper.step(loss)             # backward + update; e.g. {"eta": η}
            accumulate loss, hits, logs on device # (stats.py) — no per-step sync
            at the last step or every `eval_every` steps: RECORD
        at the epoch's end: RECORD
    write figure.png

    RECORD = evaluate on the test set; append the metrics of the steps since the previous
             record to metrics.jsonl; write checkpoint.pt (atomic)

On a text dataset the evaluation is the language-model metric: ``test_loss`` is the next-token
cross-entropy in nats, token-weighted over every window of the whole test split (see
:meth:`hyperfree.train._run._Run.evaluate`), whatever the training loss.

The optimiser comes only from the registry (:func:`~hyperfree.train.optimizers.build_optimizer`),
so AGD, the baselines, hypergradient towers and later plug-ins train the same way; once the
run's length is known, a learning-rate optimiser's stepper is put under its lr schedule
(:mod:`~hyperfree.train.schedules`). ``tensorboard=True`` adds a
:class:`~hyperfree.train.tensorboard.TensorBoardLog` callback (first, so it sees every step). Under
``DistributedDataParallel`` the forward pass goes through the DDP wrapper (gradients are averaged
in backward), each rank takes its share of the global batch, metrics are reduced across ranks
and only rank 0 writes files or shows progress. ``KeyboardInterrupt`` at a step boundary (e.g.
from :class:`~hyperfree.train.callbacks.StopFlag`) saves a checkpoint and is re-raised as
:class:`TrainingInterrupted`.

The run owns its directory (:mod:`~hyperfree.train.rundir`: locked until it ends). Divergence
stops it: the loss sum is checked at the loop's existing host syncs (every ``log_every`` steps,
single-process; every epoch's end, all ranks together) and the weights before every save, so a
non-finite loss or weight raises :class:`TrainingDiverged` and the last good checkpoint stays.
Repeated warnings are counted and summarised at each epoch's end (:mod:`~hyperfree.train.tally`).
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, NoReturn, Sequence

from ._run import _Run
from .build import build_model, load_data, model_flags, resolve_device
from .callbacks import Callback
from .config import TrainConfig, resolve_config
from .distributed import SINGLE, DistContext
from .outcome import History, TrainingDiverged, TrainingInterrupted
from .preflight import check_batch_size, check_run_memory, out_of_memory
from .record import environment, write_config, write_metrics
from .resume import open_checkpoint
from .rundir import claim_run_dir, writing
from .steppers import describe_stepper
from .tensorboard import tensorboard_callbacks
from .tally import WarningTally
from .transfer import select_classes

__all__ = ["History", "TrainingInterrupted", "TrainingDiverged", "train", "FIGURE_NAME"]

FIGURE_NAME = "figure.png"


def train(cfg: TrainConfig, *, callbacks: Sequence[Callback] = (), dist: DistContext = SINGLE,
          data: Any = None, memory: int | None = None) -> History:
    """Run ``cfg`` and return its :class:`History`.

    ``data`` is an already loaded ``DataBundle`` (default: ``load_dataset(cfg.dataset, ...)``,
    text windows of the model's ``seq_len``; a given bundle keeps its own window length);
    ``dist`` is an initialised process-group context (default: one process). The optimiser's
    defaults are resolved into the config first, so ``config.json`` says what ran. Raises
    ValueError (bad settings, unknown names, a run dir that holds another run or is in use),
    ``CheckpointError`` (resume from a missing/corrupt checkpoint), :class:`TrainingDiverged`
    and :class:`TrainingInterrupted` on Ctrl-C. Resuming a run that has already done its
    epochs (or steps) trains nothing and leaves its files as they are. ``memory`` is the bytes
    the run may use on its device (e.g. :func:`~hyperfree.train.memory.available_memory`): a
    model that needs more is refused before it is allocated (``None``: not checked). A failed
    allocation or write is a one-line ValueError naming what to change and what was kept.
    """
    cfg = resolve_config(cfg)
    device = resolve_device(cfg.device, dist)
    flags = model_flags(cfg)
    run_dir = None if cfg.out_dir is None else Path(cfg.out_dir)
    owner = claim_run_dir(run_dir) if run_dir is not None and dist.is_main \
        else contextlib.nullcontext()
    board = tensorboard_callbacks(cfg.tensorboard and dist.is_main, run_dir, cfg.log_every)
    with owner, WarningTally() as tally, board as logs:
        ckpt = open_checkpoint(cfg, run_dir, device, dist)
        bundle = data if data is not None else load_data(cfg, device)
        if cfg.classes is not None:  # fine-tuning on some of the classes
            bundle = select_classes(bundle, cfg.classes)
        check_batch_size(cfg.train_bs, bundle)
        if memory is not None:
            check_run_memory(lambda: build_model(cfg, bundle.info), cfg.arch, flags, memory)
        try:
            run = _Run(cfg, dist, device, bundle, [*logs, *callbacks], run_dir, tally)
        except (RuntimeError, MemoryError) as exc:
            _reraise(exc, out_of_memory(exc, "building the model", flags))
        cfg = run.cfg  # with the step-counted run's default eval_every filled in
        if ckpt is not None:
            run.restore(ckpt)
            if run.finished() and not run.record_due():  # nothing left to do
                return History(run.records, run_dir, run.model, run.stepper)
        run.wrap_ddp()
        if run_dir is not None and dist.is_main:
            n_params = sum(p.numel() for p in run.model.parameters())
            with writing(run_dir / "config.json", run.kept()):
                write_config(run_dir, cfg.to_dict(), environment(device, dist.world_size),
                             {"num_parameters": n_params,
                              "resolved": {"loss": run.loss_name, "model": flags,
                                           "optimizer": describe_stepper(run.stepper)}})
                write_metrics(run_dir, run.records)
        _run_segments(run, flags)
        if run_dir is not None and dist.is_main and cfg.plots:
            from .plots import plot_runs

            with writing(run_dir / FIGURE_NAME, "the checkpoint and metrics.jsonl are complete"):
                plot_runs([run_dir], run_dir / FIGURE_NAME)
    return History(run.records, run_dir, run.model, run.stepper)


def _run_segments(run: _Run, flags: dict[str, Any]) -> None:
    """Train until ``run.finished()``, recording at epoch ends, every ``eval_every`` steps and
    at the last step; Ctrl-C at a step boundary checkpoints there. A tower's own divergence
    error becomes :class:`TrainingDiverged`, a failed allocation a one-line ValueError."""
    try:
        if run.record_due():  # resumed from a Ctrl-C that came right at a record point
            run.end_segment()
        while not run.finished():
            run.train_epoch(run.segment_end())
            run.end_segment()
    except KeyboardInterrupt:
        run.progress.close()
        saved = run.save() if run.at_boundary else None
        raise TrainingInterrupted(saved) from None
    except TrainingDiverged:
        run.progress.close()
        raise
    except FloatingPointError as exc:  # e.g. hyper.TowerDivergedError: names level and value
        run.progress.close()
        raise run.diverged(str(exc).splitlines()[0].rstrip(".")) from None
    except (RuntimeError, MemoryError) as exc:
        run.progress.close()
        _reraise(exc, out_of_memory(exc, f"training; {run.kept()}", flags))


def _reraise(exc: BaseException, error: BaseException) -> NoReturn:
    """Raise ``error`` in place of ``exc`` (one line, no chain), or ``exc`` itself as it was."""
    if error is exc:
        raise exc
    raise error from None
