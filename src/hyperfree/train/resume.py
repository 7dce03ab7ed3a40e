"""What continuing a stored run requires, checked before any work is done.

:func:`open_checkpoint` is the loop's door into a run directory:

* a new run refuses a directory that already holds a checkpoint;
* a resumed run loads ``checkpoint.pt`` (every key the loop needs must be there), and refuses
  settings that change the trajectory (:func:`~hyperfree.train.config.check_resumable`, on the
  *resolved* configs) and an ``epochs`` below what the run has already reached: resuming never
  rewrites history. ``epochs`` equal to the epochs done is a no-op; ``"auto"`` continues until
  the loss has stopped falling (a run that has stopped by that rule stays stopped).

Exact resume (bit-for-bit equal to an uninterrupted run) also depends on the settings in
:func:`exactness_settings`: the device type, the number of processes and, on a CPU, torch's
thread count (it changes how reductions are split). They are stored in every checkpoint; a
resume under different ones warns that it continues correctly but not bit-identically.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from .checkpoint import CHECKPOINT_NAME, load_checkpoint
from .config import AUTO, TrainConfig, check_resumable
from .distributed import DistContext

__all__ = ["CHECKPOINT_KEYS", "exactness_settings", "open_checkpoint"]

CHECKPOINT_KEYS: tuple[str, ...] = ("model", "stepper", "epoch", "batch", "global_step", "stats",
                                    "rng", "config", "metrics")


def exactness_settings(device: torch.device, dist: DistContext) -> dict[str, Any]:
    """The settings besides the config that a bit-exact resume needs to be equal."""
    out: dict[str, Any] = {"device": device.type, "world_size": dist.world_size}
    if device.type == "cpu":
        out["num_threads"] = torch.get_num_threads()
    return out


def open_checkpoint(cfg: TrainConfig, run_dir: Path | None, device: torch.device,
                    dist: DistContext) -> dict[str, Any] | None:
    """The checkpoint ``cfg`` continues (``None`` for a new run), after every check above."""
    if run_dir is None:
        return None
    path = run_dir / CHECKPOINT_NAME
    if not cfg.resume:
        if path.exists():
            raise ValueError(f"{run_dir} already holds a run; continue it with --resume "
                             f"{run_dir} or choose another --out")
        return None
    ckpt = load_checkpoint(path, map_location=device, required=CHECKPOINT_KEYS)
    check_resumable(ckpt["config"], cfg)
    _check_not_shorter(cfg, ckpt, run_dir)
    _warn_if_inexact(ckpt.get("exactness"), exactness_settings(device, dist))
    return ckpt


def _check_not_shorter(cfg: TrainConfig, ckpt: dict[str, Any], run_dir: Path) -> None:
    """ValueError if ``cfg`` asks for fewer epochs/steps than the run has done (``"auto"``
    continues until η fades, or its cap: never shorter)."""
    if AUTO in (cfg.epochs, cfg.steps):
        return
    if cfg.steps is not None:
        unit, wanted, done = "steps", cfg.steps, int(ckpt["global_step"])
        what = f"already taken {done} steps"
    else:
        unit, wanted = "epochs", cfg.epochs
        done = int(ckpt["epoch"]) + (1 if int(ckpt["batch"]) > 0 else 0)
        what = f"already reached epoch {done}"
    if wanted < done:
        raise ValueError(f"cannot resume {run_dir} with {unit}={wanted}: the run has {what}; "
                         f"give --{unit} {done} or more (or leave it out) to continue it, or "
                         "start a new run with --out")


def _warn_if_inexact(stored: dict[str, Any] | None, now: dict[str, Any]) -> None:
    if not stored:
        return  # a checkpoint from before these settings were recorded
    changed = [f"{k} {stored.get(k)!r} -> {v!r}" for k, v in now.items() if stored.get(k) != v]
    if changed:
        warnings.warn(f"resuming with {', '.join(changed)}: the run continues correctly but "
                      "not bit-identically to an uninterrupted one (exact resume needs the "
                      "same device, processes and CPU threads)", RuntimeWarning, stacklevel=3)
