"""Owning a run directory: it is created if needed and locked for the run's lifetime.

Two runs writing one directory would interleave their records (metrics of both, a config of
one, a checkpoint of the other), so :func:`claim_run_dir` takes an exclusive
``fcntl.flock`` on ``<run_dir>/.lock`` and holds it until the run ends, when it removes the
file. The kernel releases the lock when the process exits, however it exits (crash,
``kill -9``), so a lock file left by a dead run never blocks the next one, and the next run
on the directory (which takes the lock, then removes the file as it ends) clears it. The file
holds the owner's pid, for the refusal message. A run that opened the file just before its
owner removed it notices (the path then names another file, or none) and tries again. On
platforms without ``fcntl`` (Windows) the directory is not locked.

A directory that cannot be written is refused before any work, and a write that fails later
(a full disk, a permission changed mid-run) is :class:`RunDirError` through :func:`writing`:
one line naming the file, the reason and what was kept.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_NAME", "RunDirError", "claim_run_dir", "writing"]

LOCK_NAME = ".lock"


class RunDirError(ValueError):
    """A file of the run directory could not be written (one line: which, why, what is kept)."""


@contextlib.contextmanager
def writing(path: Path, kept: str) -> Iterator[None]:
    """Turn an ``OSError`` raised inside into :class:`RunDirError` naming ``path``, the reason
    and ``kept`` (what is still on disk, e.g. the last good checkpoint)."""
    try:
        yield
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise RunDirError(f"could not write {path}: {why}; {kept}. Free space or fix the "
                          "permissions, then continue with --resume") from None


@contextlib.contextmanager
def claim_run_dir(run_dir: Path) -> Iterator[Path]:
    """Create ``run_dir`` if needed and hold its lock inside the ``with`` block.

    Raises ValueError (one line) if another live process holds the lock, or if the directory
    cannot be made (e.g. ``--out`` is a file, or lies under one). A directory this call created
    is removed again if nothing but the lock was written to it.
    """
    created = not run_dir.exists()
    _make_dir(run_dir)
    try:
        fd = _lock(run_dir)
    except ValueError:
        if created:
            _remove_if_empty(run_dir)
        raise
    try:
        yield run_dir
    finally:
        if fd is not None:
            (run_dir / LOCK_NAME).unlink(missing_ok=True)  # still locked: nobody else owns it
            if created:
                _remove_if_empty(run_dir)
            os.close(fd)  # releases the flock


def _remove_if_empty(run_dir: Path) -> None:
    with contextlib.suppress(OSError):
        if not any(run_dir.iterdir()):
            run_dir.rmdir()


def _make_dir(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = next((p for p in (run_dir, *run_dir.parents) if p.exists()), run_dir)
        why = f"{blocker} is a file, not a directory" if blocker.is_file() else exc.strerror
        raise ValueError(f"cannot use {run_dir} as the run directory: {why}; choose another "
                         "--out") from None


def _lock(run_dir: Path) -> int | None:
    """Open and flock ``run_dir/.lock`` (retrying if its owner removed it meanwhile)."""
    if fcntl is None:  # pragma: no cover - Windows
        return None
    path = run_dir / LOCK_NAME
    while True:
        _make_dir(run_dir)  # the previous owner may have removed the directory it had made
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # ... just now
            continue
        except OSError as exc:  # read-only, not ours, a full disk
            raise ValueError(f"cannot write in {run_dir}: {exc.strerror or exc}; make it "
                             "writable, or start a new run elsewhere with --out") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ValueError(f"{run_dir} is in use by another run (pid {owner}); wait for it "
                             "to finish or choose another --out") from None
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)  # we locked a file its owner unlinked on the way out: try the new one
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd
