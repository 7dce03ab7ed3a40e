"""The training harness: ``train(TrainConfig(...)) -> History`` and its run-directory records.

>>> from hyperfree.train import TrainConfig, train
>>> history = train(TrainConfig(epochs=1, out_dir=None, progress=False))  # doctest: +SKIP

Modules: config (TrainConfig), length (epochs/steps N or "auto": stop when AGD's η fades),
loop (train), outcome (History, TrainingDiverged), evaluation (the test metric), preflight and
memory (batch size and memory checks before a run), steppers (the Stepper protocol the loop
drives, MuonStepper), optimizers (the optimiser registry and its built-in entries agd, agd-<preset>,
sgd, adam, adamw, muon), schedules (lr schedules of the learning-rate optimisers), peers
(third-party learning-rate-free optimisers), towers (hypergradient stacks), losses, stats
(device-side metrics), checkpoint, resume (what continuing a run requires), rundir (the run
directory's lock), record (config.json, metrics.jsonl), tally (repeated warnings counted), plots
(Figure-4-style PNGs), distributed (DDP context), progress (a bar on a terminal, one line per
epoch otherwise), tensorboard (--tensorboard event files), callbacks.
"""
from __future__ import annotations

from . import peers, towers  # noqa: F401  (register their optimiser entries)

from .callbacks import Callback, StepInfo, StopFlag
from .checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint, save_checkpoint
from .config import AUTO, DEFAULT_EPOCHS, TrainConfig, check_resumable, resolve_config
from .distributed import SINGLE, DistContext, close_distributed, dist_from_env, init_distributed
from .build import build_model, load_data, model_flags, resolve_device
from .loop import FIGURE_NAME, History, TrainingDiverged, TrainingInterrupted, train
from .losses import cross_entropy, get_loss, square_loss
from .optimizers import (OptimArgs, OptimInfo, build_optimizer, get_optimizer_info,
                         list_optimizers, register_optimizer, register_spec_parser)
from .plots import plot_runs
from .record import CONFIG_NAME, METRICS_NAME, read_config, read_metrics
from .steppers import Stepper, TorchStepper

__all__ = ["Callback", "StepInfo", "StopFlag", "CHECKPOINT_NAME", "CheckpointError",
           "load_checkpoint", "save_checkpoint", "AUTO", "DEFAULT_EPOCHS", "TrainConfig",
           "check_resumable", "resolve_config", "SINGLE", "DistContext", "close_distributed",
           "dist_from_env", "init_distributed", "FIGURE_NAME", "History", "TrainingDiverged",
           "TrainingInterrupted", "build_model", "load_data", "model_flags", "resolve_device",
           "train", "cross_entropy", "get_loss", "square_loss", "OptimArgs", "OptimInfo",
           "build_optimizer", "get_optimizer_info", "list_optimizers", "register_optimizer",
           "register_spec_parser", "plot_runs", "CONFIG_NAME", "METRICS_NAME", "read_config",
           "read_metrics", "Stepper", "TorchStepper"]
