"""Every failure a user can cause, run as a user would, and the tally.

Each case runs the real ``hyperfree`` command in a subprocess (its own run directory under a
temporary folder) and checks three things:

* **one line**: stderr holds exactly one line besides warnings (``hyperfree: warning: ...``),
  and the exit status is the documented one (2 user mistake, 3 diverged, 130 Ctrl-C,
  143 SIGTERM);
* **no traceback**: ``Traceback`` appears nowhere in stdout or stderr;
* **nothing lost**: the files that were there before (a run's checkpoint, config, metrics,
  an existing report) are byte for byte as they were, no temporary file or ``.lock`` is left,
  and where the case says so the run still resumes.

The cases are those of issue 20: memory (``--width 100000``, ``--depth 1000000``, ``--width
1e18`` and a width whose size overflows), absurd ``--train-bs``, ``--gain 1e300`` (the message
states AGD's limit 1e6), a directory that cannot be written (a new run under it, ``--resume``
into it; as root, whom file modes do not stop, the directory is made immutable), a
checkpoint write that fails mid-run (a file-size limit, ``RLIMIT_FSIZE``, below the
checkpoint's size), Ctrl-C in the first second,
SIGTERM mid-run, a stale ``.lock`` left by ``kill -9``, messages that name the CLI's flags
(``--data-dir``, ``--download``), a tower's divergence (exit 3; the hint names the stack),
and ``report`` of a runs directory without runs.

Run: .venv/bin/python benchmarks/failures.py      (about 2 minutes on 2 busy cores)
Prints one line per case and the tally; exits 1 if any case fails.
"""
from __future__ import annotations

import hashlib
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

HF = [sys.executable, "-m", "hyperfree"]
SMALL = ["--depth", "2", "--width", "32", "--test-bs", "1000", "--no-progress", "--no-plots",
         "--threads", "1"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _snapshot(folder: Path) -> dict[str, str]:
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _hf(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HF, *args], capture_output=True, text=True, env=ENV, timeout=600,
                          **kwargs)


class Case:
    """One failure: ``run(tmp) -> (proc, ok_lost, note)``; ``code`` the expected exit."""

    def __init__(self, name: str, code: int, run: Callable[[Path], tuple[Any, bool, str]],
                 needs: str = "") -> None:
        self.name, self.code, self.run, self.needs = name, code, run, needs


def _refusal(argv: list[str], needs: str = "") -> Callable[[Path], tuple[Any, bool, str]]:
    """A new run refused before any work: no run directory may be left behind."""
    def run(tmp: Path) -> tuple[Any, bool, str]:
        out = tmp / "run"
        proc = _hf(["train", "--out", str(out), *argv])
        ok = not out.exists() and (needs in proc.stderr)
        return proc, ok, "" if ok else f"expected {needs!r} and no {out}"
    return run


def _trained(tmp: Path, epochs: int = 1) -> Path:
    run = tmp / "trained"
    proc = _hf(["train", "--epochs", str(epochs), "--limit-batches", "20", "--out", str(run),
                *SMALL])
    assert proc.returncode == 0, proc.stderr
    return run


def _read_only(path: Path, on: bool) -> None:
    """Make ``path`` unwritable (``on``) or writable again: ``chattr +i`` as root, whom file
    modes do not stop, else ``chmod``."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i" if on else "-i", str(path)], check=True)
    else:
        path.chmod(0o555 if on else 0o755)


def _unwritable_resume(tmp: Path) -> tuple[Any, bool, str]:
    run = _trained(tmp)
    before = _snapshot(run)
    _read_only(run, True)
    try:
        proc = _hf(["train", "--resume", str(run), "--epochs", "2"])
    finally:
        _read_only(run, False)
    ok = _snapshot(run) == before and "cannot write in" in proc.stderr
    return proc, ok, "" if ok else "files changed or message missing"


def _unwritable_new(tmp: Path) -> tuple[Any, bool, str]:
    parent = tmp / "readonly"
    parent.mkdir()
    _read_only(parent, True)
    try:
        proc = _hf(["train", "--out", str(parent / "run"), *SMALL])
    finally:
        _read_only(parent, False)
    ok = not any(parent.iterdir()) and "cannot use" in proc.stderr
    return proc, ok, "" if ok else "something was created or message missing"


def _failed_checkpoint_write(tmp: Path) -> tuple[Any, bool, str]:
    run = _trained(tmp)
    before = (run / "checkpoint.pt").read_bytes()
    limit = len(before) // 2  # config.json and metrics.jsonl fit; the next checkpoint cannot

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    proc = subprocess.run([*HF, "train", "--resume", str(run), "--epochs", "3"],
                          capture_output=True, text=True, env=ENV, timeout=600,
                          preexec_fn=small_files)
    kept = (run / "checkpoint.pt").read_bytes() == before
    clean = not [p for p in run.iterdir() if p.name.endswith(".tmp") or p.name == ".lock"]
    again = _hf(["train", "--resume", str(run), "--epochs", "2"])
    ok = kept and clean and again.returncode == 0 and "is kept" in proc.stderr
    return proc, ok, "" if ok else f"kept={kept} clean={clean} resumed={again.returncode}"


def _default_sigint() -> None:
    """In the child: Ctrl-C's default disposition, as a command typed in a terminal has (this
    script started in the background hands its children "ignore", which the CLI honours)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _signal_run(tmp: Path, sig: int, after: float, argv: list[str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen([*HF, "train", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV,
                            preexec_fn=_default_sigint)
    time.sleep(after)
    proc.send_signal(sig)
    return proc


def _early_sigint(tmp: Path) -> tuple[Any, bool, str]:
    out = tmp / "run"
    proc = _signal_run(tmp, signal.SIGINT, 1.0, ["--out", str(out), *SMALL])
    stdout, stderr = proc.communicate(timeout=600)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    ok = not (out / "checkpoint.pt").exists() and not (out / ".lock").exists()
    return done, ok, "" if ok else "files were left"


def _wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 300) -> None:
    t0 = time.time()
    while not path.exists() and proc.poll() is None and time.time() - t0 < timeout:
        time.sleep(0.1)


def _sigterm(tmp: Path) -> tuple[Any, bool, str]:
    out = tmp / "run"
    proc = subprocess.Popen([*HF, "train", "--out", str(out), "--epochs", "50",
                             "--limit-batches", "40", *SMALL], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    _wait_for(out / "checkpoint.pt", proc)  # the first epoch is saved: mid-run from here
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=600)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    ok = (out / "checkpoint.pt").exists() and not (out / ".lock").exists()
    return done, ok, "" if ok else "no checkpoint, or the lock was left"


def _stale_lock(tmp: Path) -> tuple[Any, bool, str]:
    out = tmp / "run"
    proc = subprocess.Popen([*HF, "train", "--out", str(out), "--epochs", "50",
                             "--limit-batches", "40", *SMALL], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    _wait_for(out / "checkpoint.pt", proc)
    proc.kill()  # kill -9: no handler runs, the .lock file stays
    proc.communicate()
    stale = (out / ".lock").exists()
    import torch

    epochs = int(torch.load(out / "checkpoint.pt", weights_only=True)["epoch"])
    done = _hf(["train", "--resume", str(out), "--epochs", str(epochs)])  # a no-op
    ok = stale and not (out / ".lock").exists()
    return done, ok, "" if ok else f"stale={stale}, still there={(out / '.lock').exists()}"


def _tower_diverges(tmp: Path) -> tuple[Any, bool, str]:
    out = tmp / "run"
    proc = _hf(["train", "--optimizer", "sgd(1e6)/sgd(1e-5)", "--loss", "xent", "--epochs", "1",
                "--out", str(out), *SMALL])
    ok = "stack takes no --lr or --gain" in proc.stderr and "--lr/--gain" not in proc.stderr
    return proc, ok, "" if ok else "the hint does not name the stack"


def _report_without_runs(tmp: Path) -> tuple[Any, bool, str]:
    out = tmp / "new.md"
    proc = _hf(["report", "--runs-dir", str(tmp / "typo"), "--out", str(out)])
    return proc, not out.exists(), "" if not out.exists() else f"{out} was written"


CASES = [
    Case("--width 100000", 2, _refusal(["--width", "100000", *SMALL[4:]], "lower --width")),
    Case("--depth 1000000", 2, _refusal(["--depth", "1000000", *SMALL[4:]], "lower --width")),
    Case("--width 1e18", 2, _refusal(["--width", "1e18", *SMALL[4:]], "--width")),
    Case("--width 10**18", 2, _refusal(["--width", str(10**18), *SMALL[4:]], "overflows")),
    Case("--train-bs 100000000", 2, _refusal(["--train-bs", "100000000", *SMALL],
                                             "give at most 60000")),
    Case("--gain 1e300", 2, _refusal(["--gain", "1e300", *SMALL], "(0, 1e6]")),
    Case("tinyshakespeare without --data-dir", 2,
         _refusal(["--arch", "gpt", "--dataset", "tinyshakespeare", "--no-progress"],
                  "--data-dir a UTF-8 text file")),
    Case("--data-dir that is not there", 2,
         _refusal(["--dataset", "mnist", "--data-dir", "/nonexistent/mnist", *SMALL],
                  "or --download")),
    Case("--epochs auto with a decaying schedule", 2,
         _refusal(["--optimizer", "adam", "--schedule", "cosine", "--epochs", "auto", *SMALL],
                  "give --epochs N")),
    Case("--resume into an unwritable dir", 2, _unwritable_resume),
    Case("--out under an unwritable dir", 2, _unwritable_new),
    Case("checkpoint write fails mid-run", 2, _failed_checkpoint_write),
    Case("Ctrl-C in the first second", 130, _early_sigint),
    Case("SIGTERM mid-run", 143, _sigterm),
    Case("stale .lock after kill -9", 0, _stale_lock),
    Case("tower diverges", 3, _tower_diverges),
    Case("report of a runs dir without runs", 2, _report_without_runs),
]


def _shell_status(returncode: int) -> int:
    """The status a shell reports: 128 + N for a process that ended by signal N. (A Ctrl-C
    that lands inside torch's import can leave CPython's "unhandled KeyboardInterrupt" flag set
    although the command caught it and printed its line; CPython then ends by SIGINT, which a
    shell reports as 130, the status the command returns.)"""
    return returncode if returncode >= 0 else 128 - returncode


def _lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines()
            if line.strip() and not line.startswith("hyperfree: warning:")]


def main() -> int:
    passed = 0
    for case in CASES:
        with tempfile.TemporaryDirectory(prefix="hf-failure-") as folder:
            tmp = Path(folder)
            t0 = time.time()
            proc, ok_lost, note = case.run(tmp)
            lines = _lines(proc.stderr)
            code = _shell_status(proc.returncode)
            one_line = code == case.code and (len(lines) == 1 or case.code == 0)
            no_tb = "Traceback" not in proc.stderr + proc.stdout
            ok = one_line and no_tb and ok_lost
            passed += ok
            shown = lines[-1] if lines else proc.stdout.strip().splitlines()[-1:] or [""]
            shown = shown if isinstance(shown, str) else shown[0]
            print(f"{'PASS' if ok else 'FAIL'}  {case.name:38s} exit {code} "
                  f"({time.time() - t0:.0f} s) one line={one_line} traceback={not no_tb} "
                  f"nothing lost={ok_lost}{'  ' + note if note else ''}\n      {shown[:200]}",
                  flush=True)
    print(f"tally: {passed}/{len(CASES)} cases one line, no traceback, nothing lost")
    return 0 if passed == len(CASES) else 1


if __name__ == "__main__":
    sys.exit(main())
