"""Checks a run passes before it starts, and the one line for an allocation that fails anyway.

* ``train_bs`` may not exceed the training set (:func:`check_batch_size`): one batch of all of
  it is full-batch training, more is a typo such as ``--train-bs 100000000`` (which would run
  one step an epoch with an η of 0).
* The model must fit in the memory the caller says is free (:func:`check_run_memory`, the
  estimate of :mod:`~hyperfree.train.memory`): the refusal names the model's size and the
  flags that set it.
* An allocation that fails all the same (an activation too large, another process taking the
  memory) becomes a one-line ValueError through :func:`out_of_memory`.
"""
from __future__ import annotations

from typing import Any, Callable

from torch import nn

from .memory import allocation_failure, check_memory, estimate_memory

__all__ = ["check_batch_size", "check_run_memory", "out_of_memory", "size_flags"]

_SIZE_FLAGS = ("width", "depth", "seq_len")


def check_batch_size(train_bs: int, bundle: Any) -> None:
    """ValueError if ``train_bs`` exceeds the examples (text: windows) of ``bundle``'s training
    set; a streamed dataset (no ``train_x``) is not checked."""
    n = None if bundle.train_x is None else int(bundle.train_x.shape[0])
    if n is not None and train_bs > n:
        what = "windows" if bundle.info.kind == "text" else "examples"
        raise ValueError(f"--train-bs {train_bs} is larger than the {n} training {what} of "
                         f"{bundle.info.name}; give at most {n} (that many is full-batch "
                         "training)")


def size_flags(flags: dict[str, Any]) -> str:
    """The model's size flags as a user would lower them: ``--width, --depth``."""
    names = [f"--{k.replace('_', '-')}" for k in _SIZE_FLAGS if k in flags]
    return ", ".join(names) or "the model's size"


def check_run_memory(build: Callable[[], nn.Module], arch: str, flags: dict[str, Any],
                     budget: int) -> None:
    """ValueError (one line: size, budget, flags to lower) if ``build()``'s model needs more
    than ``budget`` bytes to train."""
    given = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in flags.items()
                      if k in _SIZE_FLAGS)
    check_memory(estimate_memory(build, budget), budget, f"the model ({arch}, {given})",
                 size_flags(flags))


def out_of_memory(exc: BaseException, when: str, flags: dict[str, Any]) -> BaseException:
    """A one-line ValueError for a failed allocation (raise it ``from None``); ``exc`` itself
    for any other error."""
    what = allocation_failure(exc)
    if what is None:
        return exc
    return ValueError(f"{what} while {when}; lower --train-bs, --test-bs or "
                      f"{size_flags(flags)}")
