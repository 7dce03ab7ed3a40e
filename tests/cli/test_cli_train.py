"""`hyperfree train` / `hyperfree plot` end to end on the vendored Fashion-MNIST, a few batches:
run-dir files and metrics keys, resume through the CLI, Ctrl-C (a real SIGINT) -> checkpoint and
exit 130 whether the process started with SIGINT handled or ignored (as a background job does),
and user mistakes (bad flags and values, --out under a file, resuming with a changed
setting, fewer epochs or a checkpoint missing a key) -> exit 2 with one line on stderr and no
traceback."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

from hyperfree.cli import main
from hyperfree.train import stats as stats_module

FAST = ["--limit-batches", "3", "--depth", "3", "--width", "32", "--test-bs", "500",
        "--no-progress", "--threads", "1"]  # exact resumes need one thread count (not the
#                                             idle cores, which differ from run to run)


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse errors exit directly
        return int(exc.code or 0)


def test_train_writes_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert _run(["train", "--epochs", "2", "--out", str(out), *FAST]) == 0
    assert str(out) in capsys.readouterr().out
    body = json.loads((out / "config.json").read_text())
    assert body["config"]["epochs"] == 2 and body["config"]["arch"] == "fcn"
    for key in ("python", "torch", "hyperfree", "git_commit", "hostname", "device"):
        assert key in body["environment"], key
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
    for key in ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "eta_mean",
                "eta_min", "eta_max", "rel_update", "seconds"):
        assert key in json.loads(lines[-1]), key
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["config"]["depth"] == 3
    assert (out / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_overlays_runs_and_resume_matches_straight_run(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert _run(["train", "--epochs", "2", "--out", str(a), "--no-plots", *FAST]) == 0
    assert _run(["train", "--epochs", "1", "--out", str(b), "--no-plots", *FAST]) == 0
    assert _run(["train", "--resume", str(b), "--epochs", "2"]) == 0
    strip = [{k: v for k, v in json.loads(line).items() if not k.endswith("seconds")}
             for d in (a, b) for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert strip[:2] == strip[2:]
    fig = tmp_path / "both.png"
    assert _run(["plot", str(a), str(b), "--out", str(fig)]) == 0
    assert fig.read_bytes()[:4] == b"\x89PNG"


@pytest.fixture(params=["default", "ignored"])
def sigint_start(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The SIGINT disposition the command starts with, installed here, not inherited: a test
    process started in the background (``pytest &``, nohup, CI wrappers) inherits SIGINT
    *ignored*, and Python leaves it so. Either way the command installs its own handler."""
    start = signal.default_int_handler if request.param == "default" else signal.SIG_IGN
    previous = signal.signal(signal.SIGINT, start)
    yield start
    signal.signal(signal.SIGINT, previous)


def test_sigint_saves_checkpoint_and_exits_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str],
                                               sigint_start: Any) -> None:
    real = stats_module.EpochStats.add_batch
    calls = []

    def add_batch(self, *args, **kwargs):  # press Ctrl-C during the 2nd training step
        real(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(stats_module.EpochStats, "add_batch", add_batch)
    out = tmp_path / "run"
    assert _run(["train", "--epochs", "1", "--out", str(out), *FAST]) == 130
    assert "checkpoint saved" in capsys.readouterr().err
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["batch"]) == (0, 2)
    assert signal.getsignal(signal.SIGINT) is sigint_start  # restored


@pytest.mark.parametrize("argv, fragment", [
    (["--lr", "0.1", "--optimizer", "agd"], "--lr is not used by agd"),
    (["--threads", "0"], "--threads must be >= 1"),
    (["--arch", "nope"], "invalid choice: 'nope'"),
    (["--dataset", "cifar10", "--data-dir", "MISSING"], "not found"),
    (["--epochs", "many"], "argument --epochs: 'many' is not a whole number or auto"),
    (["--optimizer", "nope"], "unknown optimiser 'nope'"),
    (["--resume", "MISSING"], "does not exist"),
    (["--epochs", "0"], "argument --epochs: 0 is below 1"),
    (["--eval-every", "0"], "--eval-every must be an integer >= 1"),
    (["--gain", "1e300"], "agd needs --gain in (0, 1e6] (AGD's limit), got 1e+300"),
    (["--optimizer", "sgd", "--lr", "nan"], "sgd needs --lr in (0, 3.403e38] (float32's limit), "
     "got nan"),
    (["--optimizer", "adam", "--lr", "1e300"], "adam needs --lr in (0, 3.403e38] (float32's "
     "limit), got 1e+300"),
    (["--optimizer", "sgd", "--momentum", "1.5"], "sgd needs --momentum in [0, 1), got 1.5"),
    (["--optimizer", "prodigy", "--lr", "1"], "--lr is not used by prodigy: it takes no flags"),
    (["--schedule", "cosine"], "--schedule is not used by agd: it has no learning rate to "
     "schedule"),
    (["--optimizer", "agd-spectral", "--warmup-steps", "5"], "--warmup-steps is not used by "
     "agd-spectral"),
    (["--optimizer", "adam", "--schedule", "step"], "invalid choice: 'step'"),
    (["--optimizer", "adamw", "--weight-decay", "-1"], "adamw needs --weight-decay in [0, "
     "3.403e38], got -1"),
    (["--optimizer", "sgd", "--epochs", "1", "--warmup-steps", "3"],
     "--warmup-steps 3 must be below the run's 3 steps"),
])
def test_user_mistakes_exit_2_with_one_line(argv: list[str], fragment: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    argv = [str(tmp_path / "missing") if a == "MISSING" else a for a in argv]
    assert _run(["train", "--out", str(tmp_path / "run"), *FAST, *argv]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_resume_and_out_mistakes_exit_2_with_one_line(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert _run(["train", "--epochs", "2", "--out", str(run), "--no-plots", *FAST]) == 0
    assert _run(["train", "--resume", str(run), "--gain", "1"]) == 0  # the default, resolved
    config = (run / "config.json").read_bytes()
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    (tmp_path / "file").write_text("x")
    cases = [(["--resume", str(run), "--epochs", "1"], "already reached epoch 2"),
             (["--resume", str(run), "--gain", "2"], "the run used --gain 1.0 but this config "
              "has --gain 2.0"),
             (["--out", str(tmp_path / "file" / "run"), *FAST], "is a file, not a directory")]
    capsys.readouterr()
    for argv, fragment in cases:
        assert _run(["train", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert fragment in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert (run / "config.json").read_bytes() == config  # history was not rewritten
    del ckpt["config"]
    torch.save(ckpt, run / "checkpoint.pt")
    assert _run(["train", "--resume", str(run), "--epochs", "3"]) == 2
    err = capsys.readouterr().err
    assert "lacks 'config'" in err and err.count("\n") == 1


def test_real_process_error_has_no_traceback() -> None:
    proc = subprocess.run([sys.executable, "-m", "hyperfree", "train", "--arch", "nope"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_plot_of_missing_run_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["plot", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "is not a directory" in err and err.count("\n") == 1
