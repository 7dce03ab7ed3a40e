"""Figures: one panel per logged stepper scalar (union over overlaid runs) plus relative update,
objective and accuracy; PNG output; a clear error when nothing was recorded; a step-counted
run (config.json ``steps``) is drawn against the step, with markers while points are few, and
``hyperfree train --steps`` writes a record every ``--eval-every`` (default: ~10 a run)."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from hyperfree.cli import main
from hyperfree.train import plot_runs, read_metrics
from hyperfree.train.plots import draw_runs, scalar_keys


def _write_run(path: Path, keys: list[str], epochs: int = 3) -> Path:
    path.mkdir()
    with open(path / "metrics.jsonl", "w") as fh:
        for e in range(1, epochs + 1):
            rec = {"epoch": e, "train_loss": 1.0 / e, "train_acc": 0.5, "test_acc": 0.4,
                   "test_loss": 1.0, "rel_update": 0.01}
            for k in keys:
                rec.update({f"{k}_mean": 0.2, f"{k}_min": 0.1, f"{k}_max": 0.3})
            fh.write(json.dumps(rec) + "\n")
    return path


def _png_width(path: Path) -> int:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">I", data[16:20])[0]


def test_panels_are_the_union_of_logged_scalars(tmp_path: Path) -> None:
    agd = _write_run(tmp_path / "agd", ["eta"])
    tower = _write_run(tmp_path / "tower", ["lr", "lr@1"])
    assert scalar_keys([json.loads(l) for l in (tower / "metrics.jsonl").read_text()
                        .splitlines()]) == ["lr", "lr@1"]
    one = _png_width(plot_runs([agd], tmp_path / "one.png"))      # eta, rel, loss, acc
    both = _png_width(plot_runs([agd, tower], tmp_path / "both.png"))  # + lr, lr@1
    assert both / one == pytest.approx(6 / 4, rel=0.02)


def test_empty_or_missing_runs_raise(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metrics.jsonl").write_text("")
    with pytest.raises(ValueError, match="no epochs recorded"):
        plot_runs([empty], tmp_path / "x.png")
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        plot_runs([tmp_path / "nowhere"], tmp_path / "x.png")


def _config(path: Path, **cfg: object) -> None:
    (path / "config.json").write_text(json.dumps({"config": cfg, "environment": {}}))


def test_step_counted_runs_are_drawn_against_the_step(tmp_path: Path) -> None:
    steps = _write_run(tmp_path / "steps", ["eta"], epochs=3)
    lines = [json.loads(line) for line in (steps / "metrics.jsonl").read_text().splitlines()]
    (steps / "metrics.jsonl").write_text("".join(
        json.dumps({**r, "epoch": r["epoch"] / 4, "step": 50 * r["epoch"]}) + "\n"
        for r in lines))
    _config(steps, steps=150, epochs=None)
    fig = draw_runs([steps])
    assert [ax.get_xlabel() for ax in fig.axes] == ["step"] * 4
    line = fig.axes[0].lines[0]
    assert list(line.get_xdata()) == [50, 100, 150] and line.get_marker() == "o"
    epochs = _write_run(tmp_path / "epochs", ["eta"], epochs=3)
    _config(epochs, epochs=3, steps=None)
    assert draw_runs([epochs]).axes[0].get_xlabel() == "epoch"
    assert list(draw_runs([epochs]).axes[0].lines[0].get_xdata()) == [1, 2, 3]


def test_cli_steps_runs_record_every_eval_and_plot_together(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    fast = ["--depth", "2", "--width", "16", "--test-bs", "500", "--no-progress", "--threads",
            "1", "--limit-batches", "50"]
    assert main(["train", "--steps", "20", "--eval-every", "5", "--out", str(a), *fast]) == 0
    assert main(["train", "--steps", "40", "--out", str(b), "--no-plots", *fast]) == 0
    assert [r["step"] for r in read_metrics(a)] == [5, 10, 15, 20]
    assert [r["step"] for r in read_metrics(b)] == list(range(4, 41, 4))  # ~10 by default
    assert (a / "figure.png").read_bytes()[:4] == b"\x89PNG"
    fig = draw_runs([a, b])
    assert fig.axes[0].get_xlabel() == "step"
    assert [list(line.get_xdata()) for line in fig.axes[0].lines] == [
        [5, 10, 15, 20], list(range(4, 41, 4))]
    assert main(["plot", str(a), str(b), "--out", str(tmp_path / "both.png")]) == 0
