"""`hyperfree train --arch gpt` end to end on a tiny text file written here.

* `--steps 3`: metrics.jsonl's `test_loss` equals the mean next-character cross-entropy in
  nats over every test window, recomputed independently (the file re-read, split 90/10, cut
  into non-overlapping windows by hand, logsumexp - logit of the target), although
  `--limit-batches 1` caps training and `--test-bs 5` leaves a short last batch (28 windows);
* config.json records steps, seq_len, heads and the resolved loss and model flags;
* `--resume --steps` continues to the same weights as a straight run;
* `--tie-weights` drops V·d parameters;
* `--steps` with `--epochs`, and `--heads`/`--seq-len` for fcn, exit 2 with one line.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hyperfree.cli import main
from hyperfree.models import create_model

TINY = ["--arch", "gpt", "--dataset", "tinyshakespeare", "--depth", "1", "--width", "8",
        "--heads", "2", "--seq-len", "8", "--optimizer", "adam", "--lr", "3e-3", "--test-bs",
        "5", "--train-bs", "4", "--no-progress", "--no-plots",
        "--threads", "1"]  # an exact resume needs the straight run's thread count


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse errors exit directly
        return int(exc.code or 0)


@pytest.fixture()
def text_file(tmp_path: Path) -> Path:
    lines = [f"ROMEO: line {i}, what light through yonder window breaks?\n" for i in range(40)]
    path = tmp_path / "shakes.txt"
    path.write_text("".join(lines), encoding="utf-8")
    return path


def _independent_test_loss(text_file: Path, run: Path) -> float:
    text = text_file.read_text(encoding="utf-8")
    vocab = sorted(set(text))
    ids = [vocab.index(c) for c in text]
    test = ids[int(0.9 * len(ids)):]
    T = 8
    n = (len(test) - 1) // T
    x = torch.tensor([test[i * T:(i + 1) * T] for i in range(n)])
    y = torch.tensor([test[i * T + 1:(i + 1) * T + 1] for i in range(n)])
    model = create_model("gpt", in_channels=0, num_classes=len(vocab), image_size=0, depth=1,
                         width=8, heads=2, seq_len=8)
    model.load_state_dict(torch.load(run / "checkpoint.pt", weights_only=True)["model"])
    with torch.no_grad():
        f = model.eval()(x).double()
    nll = f.logsumexp(-1) - f.gather(-1, y[..., None])[..., 0]
    assert n == 28  # 5 batches of --test-bs 5, the last of 3: token weighting matters
    return nll.sum().item() / (n * T)


def test_gpt_steps_run_reports_test_loss_over_every_window(text_file: Path,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _run(["train", *TINY, "--data-dir", str(text_file), "--steps", "3",
                 "--limit-batches", "1", "--out", str(out)]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]  # --limit-batches 1: one-step epochs
    assert records[-1]["test_loss"] == pytest.approx(_independent_test_loss(text_file, out),
                                                     rel=1e-6)
    body = json.loads((out / "config.json").read_text())
    cfg = body["config"]
    assert (cfg["steps"], cfg["epochs"], cfg["seq_len"], cfg["heads"]) == (3, None, 8, 2)
    resolved = body["resolved"]
    assert {k: resolved[k] for k in ("loss", "model")} == {"loss": "xent", "model": {
        "depth": 1, "width": 8, "heads": 2, "seq_len": 8, "tie_weights": False}}
    assert resolved["optimizer"]["lr"] == 3e-3  # Adam's lr, then its schedule over the run
    assert resolved["optimizer"]["schedule"] == {"name": "constant", "warmup_steps": 0,
                                                 "total_steps": 3}


def test_resume_with_more_steps_matches_a_straight_run(text_file: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    data = ["--data-dir", str(text_file)]
    assert _run(["train", *TINY, *data, "--steps", "6", "--out", str(a)]) == 0
    assert _run(["train", *TINY, *data, "--steps", "2", "--out", str(b)]) == 0
    assert _run(["train", "--resume", str(b), "--steps", "6"]) == 0
    wa = torch.load(a / "checkpoint.pt", weights_only=True)["model"]
    wb = torch.load(b / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert json.loads((b / "config.json").read_text())["config"]["steps"] == 6


def test_tie_weights_flag(text_file: Path, tmp_path: Path) -> None:
    counts = []
    for extra in ([], ["--tie-weights"]):
        out = tmp_path / f"run{len(extra)}"
        assert _run(["train", *TINY, "--data-dir", str(text_file), "--steps", "1", *extra,
                     "--out", str(out)]) == 0
        body = json.loads((out / "config.json").read_text())
        counts.append(body["num_parameters"])
        assert body["config"]["tie_weights"] == (True if extra else None)
    vocab = len(set(text_file.read_text(encoding="utf-8")))
    assert counts[0] - counts[1] == vocab * 8


@pytest.mark.parametrize("argv, fragment", [
    (["--steps", "3", "--epochs", "2"], "give --steps 3 or --epochs 2, not both"),
    (["--heads", "3"], "--width 8 is not divisible by --heads 3"),
    (["--steps", "0"], "argument --steps: 0 is below 1"),
    (["FCN", "--heads", "2"], "model 'fcn' has no --heads (got 2)"),
    (["FCN", "--seq-len", "16"], "model 'fcn' has no --seq-len (got 16)"),
    (["FCN", "--tie-weights"], "model 'fcn' has no --tie-weights (got True)"),
])
def test_user_mistakes_exit_2_with_one_line(argv: list[str], fragment: str, text_file: Path,
                                            tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    if argv[0] == "FCN":  # the default model on the default data, plus a transformer flag
        argv = ["--no-progress", *argv[1:]]
    else:
        argv = [*TINY, "--data-dir", str(text_file), *argv]
    code = _run(["train", "--out", str(tmp_path / "run"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and err.count("\n") == 1, err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
