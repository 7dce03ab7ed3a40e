"""The training run's settings: one frozen dataclass, :class:`TrainConfig`.

Every setting of a run lives here (snake_case fields; the CLI's kebab-case flags map one to one).
``TrainConfig.to_dict()`` is what ``config.json`` and ``checkpoint.pt`` store, and
``TrainConfig.from_dict()`` reads it back. :func:`resolve_config` fills in the optimiser's
defaults (what runs is what ``config.json`` records), and :func:`check_resumable` decides
whether a stored run may be continued under a new config: the fields that change the
trajectory must match once both sides are resolved (``--gain 1`` equals AGD's default).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from .length import AUTO, DEFAULT_EPOCHS, check_length, default_length
from .optimizers import OptimArgs, reports_step_size, resolve_optim_args
from .transfer import parse_classes

__all__ = ["TrainConfig", "RESUME_FIXED_FIELDS", "resolve_config", "config_difference",
           "check_resumable", "DEFAULT_EPOCHS", "AUTO"]

_LOSSES = ("mse", "xent")
_DEVICES = ("auto", "cpu", "cuda")

# Fields that change what a run computes: a stored run may only be resumed if these are equal.
RESUME_FIXED_FIELDS: tuple[str, ...] = ("arch", "dataset", "optimizer", "loss", "lr", "momentum",
                                        "gain", "weight_decay", "schedule", "warmup_steps",
                                        "clip_grad_norm", "depth", "width", "seed", "train_bs",
                                        "heads", "seq_len", "tie_weights", "limit_batches",
                                        "classes", "init_from")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """All settings of one training run.

    ``out_dir=None`` runs in memory (no config.json, metrics.jsonl, checkpoint or figure);
    ``resume=True`` continues the run stored in ``out_dir``. ``limit_batches`` caps the train
    and test batches per epoch (for tests; a text dataset is always evaluated on its whole test
    split). ``rel_update_samples`` is how many steps per epoch measure the relative update size
    ‖ΔW‖/‖W‖; ``log_every`` is how often (in steps) the loop syncs with the device (progress,
    divergence check, TensorBoard). ``progress`` shows a bar on a terminal, one line per epoch
    otherwise; ``tensorboard`` writes TensorBoard event files into ``out_dir/tensorboard``
    (:mod:`hyperfree.train.tensorboard`; needs the ``tensorboard`` package).

    Optimiser flags (``None`` = the optimiser's default, resolved by :func:`resolve_config`):
    ``lr``, ``momentum``, ``gain`` (AGD), ``weight_decay`` (adamw, muon), and for the
    learning-rate optimisers ``schedule`` (constant, cosine, linear) with ``warmup_steps``
    (:mod:`hyperfree.train.schedules`) and ``clip_grad_norm`` (0 = no clipping).

    Fine-tuning (:mod:`hyperfree.train.transfer`): ``init_from`` starts from the weights of
    another run (its directory or ``checkpoint.pt``) instead of the optimiser's initialisation;
    ``classes`` (``"0-4"``, ``"5,6,7"``) keeps only those labels of a classification dataset.

    Run length: ``epochs`` or ``steps`` optimiser steps, not both; either may be ``"auto"``
    (stop when the training loss has stopped falling, :mod:`hyperfree.train.length`). Neither given:
    :func:`resolve_config` picks ``epochs="auto"`` for an optimiser that reports η, else
    :data:`DEFAULT_EPOCHS`. A record (evaluation, metrics line, checkpoint) is written at every
    epoch end reached, at the last step, and every ``eval_every`` steps (a step-counted run
    that does not set it records about 10 times,
    :func:`~hyperfree.train.length.default_eval_every`). ``loss=None`` is the dataset's
    default: ``mse`` (the AGD paper's square loss) for images, ``xent`` for text. ``depth``,
    ``width``, ``heads``, ``seq_len`` (a token model's context and training window length) and
    ``tie_weights`` ``None`` = the model's default.
    ``fsdp`` (under torchrun) shards the parameters with FSDP2 instead of replicating them with
    DDP (:mod:`hyperfree.train.fsdp`).
    """

    arch: str = "fcn"
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    download: bool = False
    loss: str | None = None
    optimizer: str = "agd"
    lr: float | None = None
    momentum: float | None = None
    gain: float | None = None
    weight_decay: float | None = None
    schedule: str | None = None
    warmup_steps: int | None = None
    clip_grad_norm: float | None = None
    epochs: int | str | None = None
    steps: int | str | None = None
    eval_every: int | None = None
    train_bs: int = 128
    test_bs: int = 1000
    depth: int | None = None
    width: int | None = None
    heads: int | None = None
    seq_len: int | None = None
    tie_weights: bool | None = None
    classes: str | None = None
    init_from: str | None = None
    seed: int = 0
    device: str = "auto"
    out_dir: str | None = None
    resume: bool = False
    limit_batches: int | None = None
    num_workers: int = 4
    rel_update_samples: int = 4
    log_every: int = 20
    progress: bool = True
    plots: bool = True
    tensorboard: bool = False
    fsdp: bool = False

    def __post_init__(self) -> None:
        if self.loss is not None and self.loss not in _LOSSES:
            raise ValueError(f"loss {self.loss!r} is not one of {', '.join(_LOSSES)}")
        if self.device not in _DEVICES and not self.device.startswith("cuda:"):
            raise ValueError(f"device {self.device!r} is not one of {', '.join(_DEVICES)}")
        if self.steps is not None and self.epochs is not None:
            raise ValueError(f"give steps ({self.steps}) or epochs ({self.epochs}), not both: "
                             "a run's length is counted in one of them")
        for name in ("train_bs", "test_bs", "log_every"):
            _require_int(name, getattr(self, name), 1)
        check_length("epochs", self.epochs)
        check_length("steps", self.steps)
        for name in ("eval_every", "heads", "seq_len"):
            if getattr(self, name) is not None:
                _require_int(name, getattr(self, name), 1)
        if self.classes is not None:
            parse_classes(self.classes)
        if self.tie_weights is not None and not isinstance(self.tie_weights, bool):
            raise ValueError(f"tie_weights must be True, False or None, got {self.tie_weights!r}")
        for name in ("rel_update_samples", "num_workers"):
            _require_int(name, getattr(self, name), 0)
        if self.limit_batches is not None:
            _require_int("limit_batches", self.limit_batches, 1)
        if self.resume and self.out_dir is None:
            raise ValueError("resume=True needs out_dir, the run directory to continue")
        if self.tensorboard and self.out_dir is None:
            raise ValueError("tensorboard=True needs out_dir, the run directory its event files "
                             "go to")

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-able dict (field name -> value)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys raise ValueError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config field(s) {', '.join(unknown)}; "
                             f"known fields are {', '.join(sorted(known))}")
        return cls(**data)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (validated again).

        The run length is one setting in two units: a change of ``steps`` alone clears
        ``epochs`` and a change of ``epochs`` alone clears ``steps``.
        """
        if "steps" in changes and "epochs" not in changes:
            changes = {**changes, "epochs": None}
        elif "epochs" in changes and "steps" not in changes:
            changes = {**changes, "steps": None}
        return dataclasses.replace(self, **changes)


def _require_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def resolve_config(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with its optimiser's defaults filled in, and its length if it gave none
    (``"auto"`` for an optimiser that reports η, else :data:`DEFAULT_EPOCHS`); ValueError for
    flags the optimiser does not take, or ``"auto"`` for one that reports no η."""
    fields = ("lr", "momentum", "gain", "weight_decay", "schedule", "warmup_steps",
              "clip_grad_norm")
    args = resolve_optim_args(cfg.optimizer, OptimArgs(**{f: getattr(cfg, f) for f in fields}))
    eta = reports_step_size(cfg.optimizer)
    if AUTO in (cfg.epochs, cfg.steps) and args.schedule not in (None, "constant"):
        raise ValueError(f"schedule {args.schedule!r} decays over a known number of steps, "
                         "which an 'auto' run does not have; give epochs=N or steps=N")
    length = {}
    if cfg.epochs is None and cfg.steps is None:
        length = {"epochs": default_length(eta)}
    return cfg.replace(**{f: getattr(args, f) for f in fields}, **length)


def config_difference(stored: dict[str, Any], cfg: TrainConfig,
                      fields: Sequence[str] = RESUME_FIXED_FIELDS) -> tuple[str, Any, Any] | None:
    """``(field, stored value, cfg's value)`` of the first of ``fields`` that differs once both
    configs are resolved (:func:`resolve_config`); ``None`` if they agree."""
    old = resolve_config(TrainConfig.from_dict({**stored, "resume": False}))
    new = resolve_config(cfg)
    for name in fields:
        if getattr(old, name) != getattr(new, name):
            return name, getattr(old, name), getattr(new, name)
    return None


def check_resumable(stored: dict[str, Any], cfg: TrainConfig) -> None:
    """Raise ValueError naming the first field in which ``cfg`` differs from a stored run's."""
    diff = config_difference(stored, cfg)
    if diff is not None:
        name, old, new = diff
        raise ValueError(f"cannot resume: the run used {name}={old!r} but this config has "
                         f"{name}={new!r}; drop the flag or start a new run with --out")
