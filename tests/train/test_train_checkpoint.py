"""Checkpoints: atomic save (a failing save leaves the previous file intact and no temp files),
weights_only loading, and one-line CheckpointError for missing/corrupt files."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hyperfree.train import CheckpointError, load_checkpoint, save_checkpoint
from hyperfree.train.checkpoint import rng_state, set_rng_state


def test_round_trip_with_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"w": torch.arange(3.0), "cfg": {"arch": "fcn", "lr": None}})
    data = torch.load(path, weights_only=True)
    assert torch.equal(data["w"], torch.arange(3.0)) and data["cfg"]["arch"] == "fcn"
    assert load_checkpoint(path)["cfg"] == {"arch": "fcn", "lr": None}


def test_failing_save_keeps_previous_checkpoint(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"w": torch.ones(4)})
    real_save = torch.save

    def broken_save(obj, fh, *args, **kwargs):  # writes some bytes, then dies mid-way
        real_save(obj, fh, *args, **kwargs)
        fh.truncate(10)
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"w": torch.zeros(4)})
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["w"], torch.ones(4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_missing_and_corrupt_checkpoints_raise(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "checkpoint.pt")
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(bad)
    torch.save({"no": "format"}, bad)
    with pytest.raises(CheckpointError, match="not a hyperfree"):
        load_checkpoint(bad)


def test_rng_state_round_trip() -> None:
    torch.manual_seed(5)
    state = rng_state()
    a = torch.rand(3)
    set_rng_state(state)
    assert torch.equal(torch.rand(3), a)
