"""``hyperfree train``: flags -> :class:`~hyperfree.train.TrainConfig` -> ``train()``.

Every flag defaults to "not given" (``argparse.SUPPRESS``), so the settings a user typed are
known: a new run fills the rest from ``TrainConfig``'s defaults, and ``--resume DIR`` fills
them from the stored run (the library then refuses changes that matter, e.g. another --arch).
Under ``torchrun`` (``WORLD_SIZE``/``RANK`` set) this layer starts the process group and passes
the context to the library. Ctrl-C (SIGTERM) stops at the next step boundary, saves a
checkpoint, releases the run directory and exits with status 130 (143). A run that diverges
(non-finite loss or weights) stops with one line and exit status 3; its last good checkpoint
is kept. Without ``--threads`` the thread count is the idle cores' (:mod:`._runtime`), or a
resumed run's own; the memory the model may use is what the machine has free.
"""
from __future__ import annotations

import argparse
import datetime
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

from ._runtime import EXIT_SIGNAL, add_threads_flag, set_threads, stop_on_ctrl_c

__all__ = ["EXIT_DIVERGED", "add_arguments", "run", "config_from_args", "default_out_dir"]

# flag dest -> TrainConfig field, where the names differ
_FIELD = {"out": "out_dir", "workers": "num_workers"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare the ``train`` flags (all default to SUPPRESS = not given)."""
    from hyperfree.data import list_datasets
    from hyperfree.models import list_models
    from hyperfree.train import DEFAULT_EPOCHS, list_optimizers
    from hyperfree.train.length import AUTO_MAX_EPOCHS

    S = argparse.SUPPRESS
    p.set_defaults(resume=None)
    p.add_argument("--arch", choices=list_models(), default=S,
                   help="model (default fcn; resnet50 on imagenet is resnet50_imagenet)")
    p.add_argument("--dataset", choices=list_datasets(), default=S,
                   help="dataset (default fashion-mnist, vendored)")
    p.add_argument("--data-dir", default=S, metavar="DIR",
                   help="folder (or text file) holding the dataset's official files")
    p.add_argument("--download", action="store_true", default=S,
                   help="fetch missing dataset files (checksummed)")
    p.add_argument("--loss", choices=("mse", "xent"), default=S,
                   help="objective: mse = the AGD paper's square loss (default on images), "
                        "xent = cross-entropy (default on text)")
    p.add_argument("--optimizer", default=S, metavar="SPEC",
                   help=f"registry name ({', '.join(list_optimizers())}) or a hypergradient "
                        "stack such as 'sgd(0.01)/sgd(1e-4)' (default agd)")
    p.add_argument("--lr", type=float, default=S,
                   help="learning rate of sgd, adam, adamw, muon (not agd)")
    p.add_argument("--momentum", type=float, default=S, help="momentum of sgd and muon")
    p.add_argument("--gain", type=float, default=S, help="AGD's dimensionless gain (default 1)")
    _add_schedule_arguments(p)
    p.add_argument("--epochs", type=_length, default=S, metavar="N|auto",
                   help="number of epochs, or auto: stop once the training loss falls, per "
                        "epoch, by less than 1/20 of its best epoch's fall (at most "
                        f"{AUTO_MAX_EPOCHS} epochs). Default: auto for agd, {DEFAULT_EPOCHS} for "
                        "the other optimisers")
    p.add_argument("--steps", type=_length, default=S, metavar="N|auto",
                   help="train for N optimiser steps instead of whole epochs (language "
                        "models), or auto (as --epochs auto, checked at every record); not "
                        "with --epochs")
    p.add_argument("--eval-every", type=int, default=S, metavar="K",
                   help="also evaluate and record every K steps (default: at epoch ends; a "
                        "--steps run about 10 times, or 4 times an epoch under --steps auto)")
    p.add_argument("--train-bs", type=int, default=S, help="global training batch (default 128)")
    p.add_argument("--test-bs", type=int, default=S, help="evaluation batch (default 1000)")
    p.add_argument("--depth", type=int, default=S, help="model depth (fcn default 8)")
    p.add_argument("--width", type=int, default=S, help="model width (fcn default 256)")
    p.add_argument("--heads", type=int, default=S,
                   help="attention heads of a transformer (gpt default 4; width %% heads == 0)")
    p.add_argument("--seq-len", type=int, default=S, metavar="T",
                   help="context length of a token model and its text windows (gpt default 64, "
                        "char_lstm 128)")
    p.add_argument("--tie-weights", action="store_true", default=S,
                   help="gpt: the output head shares the token embedding's matrix")
    p.add_argument("--seed", type=int, default=S, help="seed of init, order and augmentation")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=S,
                   help="auto = cuda if available else cpu (default)")
    p.add_argument("--workers", type=int, default=S,
                   help="decoding workers of streamed datasets (imagenet; default 4)")
    p.add_argument("--out", default=S, metavar="DIR",
                   help="run directory (default runs/<timestamp>-<arch>-<optimizer>)")
    p.add_argument("--resume", default=None, metavar="DIR",
                   help="continue the run in DIR (other flags default to its settings)")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=S,
                   help="hide progress (a bar on a terminal, else one line per epoch)")
    p.add_argument("--tensorboard", action="store_true", default=S,
                   help="also write every logged scalar, per step and per epoch, as "
                        "TensorBoard events in <run dir>/tensorboard (pip install "
                        "'hyperfree[tensorboard]')")
    p.add_argument("--no-plots", dest="plots", action="store_false", default=S,
                   help="do not draw figure.png at the end")
    p.add_argument("--fsdp", action="store_true", default=S,
                   help="under torchrun: shard the parameters over the processes with FSDP2 "
                        "(fully_shard) instead of replicating them with DDP (the default)")
    add_threads_flag(p, default=S)
    p.add_argument("--limit-batches", type=int, default=S, help=argparse.SUPPRESS)


def _length(text: str) -> int | str:
    """``--epochs``/``--steps``: a whole number >= 1, or ``auto``."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number or auto") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is below 1; give a whole number >= 1 or auto")
    return value


def _add_schedule_arguments(p: argparse.ArgumentParser) -> None:
    """Weight decay and the lr schedule of the learning-rate optimisers."""
    from hyperfree.train.schedules import SCHEDULES

    S = argparse.SUPPRESS
    p.add_argument("--weight-decay", type=float, default=S,
                   help="decoupled weight decay of adamw (default 0.01) and muon's matrices "
                        "(default 0.1)")
    p.add_argument("--schedule", choices=SCHEDULES, default=S,
                   help="lr schedule of sgd/adam/adamw/muon over the run's steps (default "
                        "constant; cosine and linear decay to 0)")
    p.add_argument("--warmup-steps", type=int, default=S, metavar="N",
                   help="linear lr warmup from 0 over the first N steps (default 0)")
    p.add_argument("--clip-grad-norm", type=float, default=S, metavar="C",
                   help="clip the gradients of sgd/adam/adamw/muon to global norm C before "
                        "each step (default 0: never)")
    p.add_argument("--init-from", default=S, metavar="RUN",
                   help="fine-tune: start from the weights of RUN (a run directory or its "
                        "checkpoint.pt) instead of the optimiser's initialisation")
    p.add_argument("--classes", default=S, metavar="LABELS",
                   help="keep only these labels of a classification dataset, e.g. 0-4 or "
                        "5,6,7 (train and test)")


def default_out_dir(arch: str, optimizer: str, now: datetime.datetime) -> str:
    """``runs/<UTC timestamp>-<arch>-<optimizer>`` with the spec made filename-safe."""
    opt = re.sub(r"[^A-Za-z0-9._-]+", "_", optimizer).strip("_") or "opt"
    return str(Path("runs") / f"{now:%Y%m%d-%H%M%S}-{arch}-{opt}")


def config_from_args(args: argparse.Namespace, now: datetime.datetime) -> Any:
    """The TrainConfig the flags ask for (a stored run's settings under ``--resume``)."""
    from hyperfree.train import TrainConfig, read_config

    given = {_FIELD.get(k, k): v for k, v in vars(args).items()
             if k not in ("command", "resume", "threads") and not k.startswith("_")}
    if args.resume is None:
        base = TrainConfig()
        out = given.pop("out_dir", None) or default_out_dir(
            given.get("arch", base.arch), given.get("optimizer", base.optimizer), now)
        return base.replace(**given, out_dir=out)
    stored = read_config(args.resume)
    out = given.pop("out_dir", None)
    if out is not None and Path(out).resolve() != Path(args.resume).resolve():
        raise ValueError(f"--out {out} differs from --resume {args.resume}; a resumed run stays "
                         "in its directory: drop --out")
    base = TrainConfig.from_dict({**stored, "resume": False})
    return base.replace(**{k: v for k, v in given.items() if k in base.to_dict()},
                        out_dir=args.resume, resume=True)


def _dist_context(device: str) -> Any:
    """The torchrun context, process group started; SINGLE when not under torchrun."""
    from hyperfree.train import SINGLE, dist_from_env, init_distributed, resolve_device

    ctx = dist_from_env(os.environ)
    if ctx is None or not ctx.enabled:
        return SINGLE
    addr = os.environ.get("MASTER_ADDR", "127.0.0.1")
    port = os.environ.get("MASTER_PORT", "29500")
    device_type = resolve_device(device).type
    return init_distributed(ctx, device_type=device_type, init_method=f"tcp://{addr}:{port}")


EXIT_DIVERGED = 3


def run(args: argparse.Namespace) -> int:
    """Train; print where the results went. Exit 0, 2 (user error), 3 (diverged), 130 (Ctrl-C)
    or 143 (SIGTERM)."""
    with stop_on_ctrl_c() as stop:  # Ctrl-C / SIGTERM from here on: one line, clean stop
        try:
            threads = getattr(args, "threads", None)
            set_threads(threads if threads is not None else _stored_threads(args.resume))
            cfg = config_from_args(args, datetime.datetime.now(datetime.timezone.utc))
            dist = _dist_context(cfg.device)
        except KeyboardInterrupt:
            print(f"\n{_signal_name(stop)}: nothing was written", file=sys.stderr)
            return EXIT_SIGNAL.get(stop.signum or signal.SIGINT, 130)
        return _train(cfg, dist, stop)


def _train(cfg: Any, dist: Any, stop: Any) -> int:
    from hyperfree.train import (TrainingDiverged, TrainingInterrupted, close_distributed,
                                 resolve_device, train)
    from hyperfree.train.memory import available_memory

    try:
        memory = available_memory(resolve_device(cfg.device, dist))
        history = train(cfg, callbacks=[stop], dist=dist, memory=memory)
    except KeyboardInterrupt as exc:
        if dist.is_main:
            where = exc.checkpoint if isinstance(exc, TrainingInterrupted) else None
            print(f"\n{_signal_name(stop)}: {_resume_hint(where, cfg.out_dir)}",
                  file=sys.stderr)
        return EXIT_SIGNAL.get(stop.signum or signal.SIGINT, 130)
    except TrainingDiverged as exc:
        if dist.is_main:
            print(f"hyperfree train: {exc}", file=sys.stderr)
        return EXIT_DIVERGED
    finally:
        close_distributed(dist)
    if dist.is_main:
        _report(history, cfg)
    return 0


def _signal_name(stop: Any) -> str:
    return "terminated" if stop.signum == signal.SIGTERM else "interrupted"


def _stored_threads(resume: str | None) -> int | None:
    """The CPU thread count a run to be resumed ran with (exact resume needs it), if known."""
    if resume is None:
        return None
    from hyperfree.train.record import read_environment

    try:
        threads = read_environment(resume).get("num_threads")
    except (OSError, ValueError):
        return None  # the resume itself will say what is wrong
    return threads if isinstance(threads, int) and threads >= 1 else None


def _resume_hint(checkpoint: Path | None, out_dir: str | None) -> str:
    if checkpoint is None:
        return ("stopped outside a step boundary; nothing new saved (the last epoch's "
                "checkpoint, if any, is kept)")
    return f"checkpoint saved to {checkpoint}; continue with: hyperfree train --resume {out_dir}"


def _report(history: Any, cfg: Any) -> None:
    last = history.records[-1] if history.records else None
    if last is not None:
        print(f"epoch {last['epoch']:.4g} (step {last['step']}): train loss "
              f"{last['train_loss']:.4g}, train acc {last['train_acc']:.2%}, test loss "
              f"{last['test_loss']:.4g}, test acc {last['test_acc']:.2%}")
    from hyperfree.train import resolve_config
    from hyperfree.train.length import progress_faded

    resolved = resolve_config(cfg)  # a run given no length is "auto" for AGD
    if "auto" in (resolved.epochs, resolved.steps) and last is not None:
        print("auto: the training loss fell less over the last epoch than 1/20 of its best "
              "epoch, so the run stopped" if progress_faded(history.records) else
              "auto: the run reached its cap before its loss stopped falling (give --epochs N "
              "for a longer run)")
    files = "config.json, metrics.jsonl, checkpoint.pt" + (", figure.png" if cfg.plots else "")
    print(f"results in {history.run_dir}/ ({files})")
