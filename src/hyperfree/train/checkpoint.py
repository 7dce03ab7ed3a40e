"""Checkpoints: atomic save and safe load of a run's full state.

A checkpoint is a plain dict of tensors and primitives (so ``torch.load(..., weights_only=True)``
reads it): model and stepper state dicts, the position ``(epoch, batch)``, the partial-epoch
accumulators, RNG states as tensors, the config as a dict and the metrics so far.

Saving is atomic: the bytes go to a temporary file in the same directory, which is flushed,
fsync-ed and then ``os.replace``-d over ``checkpoint.pt``; an interrupted or failing save leaves
the previous checkpoint intact and removes the temporary file. The payload is serialised in
memory first, so a failed write (a full disk, a file-size limit) raises the operating system's
own ``OSError``, which the loop reports in one line.
"""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch

__all__ = ["CHECKPOINT_NAME", "CheckpointError", "save_checkpoint", "load_checkpoint",
           "rng_state", "set_rng_state"]

CHECKPOINT_NAME = "checkpoint.pt"
_FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or not one of ours."""


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically (temp file in the same dir, fsync, replace)."""
    path = Path(path)
    buffer = io.BytesIO()  # torch's zip writer reports a failed write (a full disk) as an
    torch.save({"format": _FORMAT, **payload}, buffer)  # opaque RuntimeError: write it here
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(buffer.getbuffer())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu",
                    required: Sequence[str] = ()) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``.

    CheckpointError (one line) if it is missing, corrupt, not ours, or lacks a ``required`` key.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; resume needs a run directory written "
                              "by `hyperfree train`")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for bad bytes
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable "
                              f"({type(exc).__name__}); start a new run with --out") from None
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a hyperfree format-{_FORMAT} "
                              "checkpoint; start a new run with --out")
    missing = [key for key in required if key not in data]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(map(repr, missing))}; it was "
                              "not written by hyperfree train (or was edited): start a new run "
                              "with --out")
    return data


def rng_state() -> dict[str, Any]:
    """The global torch RNG states (CPU and every CUDA device) as tensors."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
