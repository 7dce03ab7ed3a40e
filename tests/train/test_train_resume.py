"""Resuming a run through ``train()``: settings are compared resolved (``gain=1`` equals AGD's
default) and recorded resolved (Adam's lr 1e-3, not null); history is never rewritten (fewer
epochs than done is refused, as many is a no-op); a checkpoint missing a key is a one-line
CheckpointError; a different thread count warns that the continuation is not bit-exact; and
2 epochs straight equal 1 + resume 1 bit for bit for a model whose training draws random
numbers (dropout: the RNG state must be restored), for a tower and for peers.

Run: .venv/bin/python -m pytest -q tests/train/test_train_resume.py
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch
from _train_helpers import InterruptAt, tiny_config, tiny_image_bundle
from torch import nn

from hyperfree.models import _registry as model_registry
from hyperfree.models import register_model
from hyperfree.train import _run
from hyperfree.train import (CHECKPOINT_NAME, CONFIG_NAME, CheckpointError, TrainingInterrupted, check_resumable, read_metrics, train)

torch.set_num_threads(1)


def _strip(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in records]


def _stored(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / CONFIG_NAME).read_text())["config"]


@pytest.mark.parametrize("optimizer, expected", [
    ("agd", {"lr": None, "momentum": None, "gain": 1.0}),
    ("adam", {"lr": 1e-3, "momentum": None, "gain": None}),
    ("sgd", {"lr": 0.1, "momentum": 0.0, "gain": None}),
    ("sgd(0.01)/sgd(1e-4)", {"lr": None, "momentum": None, "gain": None}),
])
def test_config_records_the_settings_that_ran(tmp_path: Path, optimizer: str,
                                              expected: dict[str, Any]) -> None:
    train(tiny_config(epochs=1, optimizer=optimizer, loss="xent", limit_batches=1,
                      out_dir=str(tmp_path)), data=tiny_image_bundle())
    stored = _stored(tmp_path)
    assert {k: stored[k] for k in expected} == expected


def test_resume_compares_resolved_settings(tmp_path: Path) -> None:
    bundle = tiny_image_bundle()
    train(tiny_config(epochs=1, out_dir=str(tmp_path)), data=bundle)
    train(tiny_config(epochs=2, gain=1.0, out_dir=str(tmp_path), resume=True), data=bundle)
    assert len(read_metrics(tmp_path)) == 2
    with pytest.raises(ValueError, match="the run used gain=1.0 but this config has gain=2.0"):
        train(tiny_config(epochs=3, gain=2.0, out_dir=str(tmp_path), resume=True), data=bundle)
    # a config.json written before defaults were resolved (lr null) still matches Adam's 1e-3
    old = {**tiny_config(optimizer="adam").to_dict(), "lr": None}
    check_resumable(old, tiny_config(optimizer="adam", lr=1e-3))
    with pytest.raises(ValueError, match="lr=0.001 but this config has lr=0.01"):
        check_resumable(old, tiny_config(optimizer="adam", lr=1e-2))


def test_resume_never_rewrites_history(tmp_path: Path) -> None:
    bundle = tiny_image_bundle()
    train(tiny_config(epochs=2, out_dir=str(tmp_path)), data=bundle)
    files = {name: (tmp_path / name).read_bytes()
             for name in (CONFIG_NAME, "metrics.jsonl", CHECKPOINT_NAME)}
    with pytest.raises(ValueError, match=r"with epochs=1: the run has already reached epoch 2; "
                                         r"give --epochs 2 or more"):
        train(tiny_config(epochs=1, out_dir=str(tmp_path), resume=True), data=bundle)
    history = train(tiny_config(epochs=2, out_dir=str(tmp_path), resume=True), data=bundle)
    assert [r["epoch"] for r in history.records] == [1, 2]  # nothing left to do: a no-op
    assert {name: (tmp_path / name).read_bytes() for name in files} == files


def test_checkpoint_missing_a_key_is_one_line(tmp_path: Path) -> None:
    bundle = tiny_image_bundle()
    train(tiny_config(epochs=1, out_dir=str(tmp_path)), data=bundle)
    ckpt = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    del ckpt["config"], ckpt["rng"]
    torch.save(ckpt, tmp_path / CHECKPOINT_NAME)
    with pytest.raises(CheckpointError, match=r"lacks 'rng', 'config'; it was not written by "
                                              r"hyperfree train"):
        train(tiny_config(epochs=2, out_dir=str(tmp_path), resume=True), data=bundle)


def test_other_thread_count_warns_that_resume_is_not_exact(tmp_path: Path) -> None:
    bundle = tiny_image_bundle()
    train(tiny_config(epochs=1, out_dir=str(tmp_path)), data=bundle)  # 1 thread (module top)
    torch.set_num_threads(2)
    try:
        with pytest.warns(RuntimeWarning, match=r"resuming with num_threads 1 -> 2: the run "
                                                r"continues correctly but not bit-identically"):
            train(tiny_config(epochs=2, out_dir=str(tmp_path), resume=True), data=bundle)
    finally:
        torch.set_num_threads(1)


@pytest.fixture
def dropout_model() -> Iterator[str]:
    """A bias-free MLP with dropout (AGD-compatible): training draws from the global RNG."""
    name = "zz_dropout_mlp"

    @register_model(name, description="test: MLP with dropout", default_width=16)
    def build(*, in_channels: int, num_classes: int, image_size: int, width: int) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size ** 2, width,
                                                     bias=False),
                             nn.ReLU(), nn.Dropout(0.5), nn.Linear(width, num_classes, bias=False))
    yield name
    model_registry._REGISTRY.unregister(name)


def _interrupted_then_resumed(tmp_path: Path, cfg: Any, bundle: Any) -> Any:
    with pytest.raises(TrainingInterrupted):
        train(cfg.replace(out_dir=str(tmp_path)), callbacks=[InterruptAt(6)], data=bundle)
    return train(cfg.replace(out_dir=str(tmp_path), resume=True), data=bundle)


def test_resume_restores_the_rng(tmp_path: Path, dropout_model: str,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = tiny_image_bundle()
    cfg = tiny_config(arch=dropout_model, depth=None, epochs=2)
    straight = train(cfg, data=bundle)
    resumed = _interrupted_then_resumed(tmp_path / "a", cfg, bundle)
    assert _strip(resumed.records) == _strip(straight.records)
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)
    # the same resume without restoring the RNG (the mutant) draws other dropout masks
    monkeypatch.setattr(_run, "set_rng_state", lambda state: None)
    broken = _interrupted_then_resumed(tmp_path / "b", cfg, bundle)
    assert not all(torch.equal(a, b) for a, b in zip(straight.model.parameters(),
                                                      broken.model.parameters()))


@pytest.mark.parametrize("optimizer", ["sgd(0.01)/sgd(1e-4)", "prodigy", "dog"])
def test_tower_and_peer_resume_exactly(tmp_path: Path, optimizer: str) -> None:
    bundle = tiny_image_bundle()
    cfg = tiny_config(epochs=2, optimizer=optimizer, loss="xent")
    straight = train(cfg, data=bundle)
    train(cfg.replace(epochs=1, out_dir=str(tmp_path)), data=bundle)
    resumed = train(cfg.replace(out_dir=str(tmp_path), resume=True), data=bundle)
    assert _strip(resumed.records) == _strip(straight.records)
    assert _strip(read_metrics(tmp_path)) == _strip(straight.records)
    for (name, a), b in zip(straight.model.state_dict().items(),
                            resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
