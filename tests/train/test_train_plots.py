"""Figures: one panel per logged stepper scalar (union over overlaid runs) plus relative update,
objective and accuracy; PNG output; a clear error when nothing was recorded."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from hyperfree.train import plot_runs
from hyperfree.train.plots import scalar_keys


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
