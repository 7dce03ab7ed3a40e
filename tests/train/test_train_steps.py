"""Step-counted training (``steps``/``eval_every``) on a language model and its text data.

* TrainConfig: ``steps`` and ``epochs`` are exclusive, ``replace`` switches the unit, the new
  architecture fields are validated and fixed on resume;
* records fall at every epoch end reached, every ``eval_every`` steps and the last step, with
  a fractional ``epoch`` mid-epoch;
* resume is bitwise exact with ``steps`` (N straight == k + resume; Ctrl-C mid-epoch), across
  epoch boundaries where the text grid shifts;
* a text run evaluates every test window although ``limit_batches`` caps training;
* text windows (``load_data``, the experiments' DataCache) have the model's ``seq_len``.
A tiny GPT (depth 1, width 8, 2 heads, T = 8) trained with Adam on a ~1,000-character text.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from _train_helpers import InterruptAt, tiny_config

from hyperfree.data import DataBundle, load_dataset
from hyperfree.train import (TrainConfig, TrainingInterrupted, check_resumable,
                             read_metrics, train)

torch.set_num_threads(1)

GPT = dict(arch="gpt", depth=1, width=8, heads=2, seq_len=8, optimizer="adam", lr=3e-3,
           train_bs=16, test_bs=5)


def text_bundle(tmp_path: Path, n_chars: int = 1000) -> DataBundle:
    """A tinyshakespeare-format bundle: train split 900 chars -> (900 - 8) // 8 = 111 windows,
    7 batches of 16 per epoch; test split 100 chars -> 12 windows of 8."""
    line = "First Citizen: we are accounted poor citizens, the patricians good.\n"
    path = tmp_path / "tiny.txt"
    path.write_text((line * (n_chars // len(line) + 1))[:n_chars], encoding="utf-8")
    return load_dataset("tinyshakespeare", data_dir=path, seq_len=8)


def _cfg(**changes: Any) -> TrainConfig:
    return tiny_config(**{**GPT, "epochs": None, **changes})


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def test_steps_and_epochs_are_one_setting_in_two_units() -> None:
    assert TrainConfig().epochs is None and TrainConfig().steps is None  # resolved: auto/30
    cfg = TrainConfig(steps=200)
    assert cfg.epochs is None and TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"give steps \(5\) or epochs \(2\), not both"):
        TrainConfig(steps=5, epochs=2)
    assert TrainConfig(epochs=2).replace(steps=5).epochs is None
    assert TrainConfig(steps=5).replace(epochs=2).steps is None
    with pytest.raises(ValueError, match="not both"):
        TrainConfig().replace(steps=5, epochs=2)
    for field, bad in [("steps", 0), ("eval_every", 0), ("heads", 0), ("seq_len", -1)]:
        with pytest.raises(ValueError, match=f"{field} must be an integer >= 1"):
            TrainConfig(**{field: bad})
    with pytest.raises(ValueError, match="tie_weights must be True, False or None"):
        TrainConfig(tie_weights="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize("field,value", [("seq_len", 16), ("heads", 4), ("tie_weights", True)])
def test_architecture_fields_are_fixed_on_resume(field: str, value: Any) -> None:
    stored = TrainConfig(**GPT).to_dict()
    check_resumable(stored, TrainConfig(**GPT, steps=500))  # a longer run is fine
    with pytest.raises(ValueError, match=f"cannot resume: the run used {field}="):
        check_resumable(stored, TrainConfig(**{**GPT, field: value}))


def test_records_at_epoch_ends_eval_every_and_the_last_step(tmp_path: Path) -> None:
    bundle = text_bundle(tmp_path)
    assert len(bundle.train_loader(16)) == 7
    history = train(_cfg(steps=10, eval_every=4), data=bundle)
    assert [r["step"] for r in history.records] == [4, 7, 8, 10]
    assert [r["epoch"] for r in history.records] == [4 / 7, 1, 1 + 1 / 7, 1 + 3 / 7]
    only_end = train(_cfg(steps=10, eval_every=1000), data=bundle).records
    assert [r["step"] for r in only_end] == [7, 10]
    by_default = train(_cfg(steps=10), data=bundle).records  # about 10 records: every step
    assert [r["step"] for r in by_default] == list(range(1, 11))
    for r in only_end:
        assert 0 < r["test_loss"] < 10 and 0 <= r["test_acc"] <= 1


def test_steps_run_resumes_bitwise(tmp_path: Path) -> None:
    bundle = text_bundle(tmp_path)
    ends = dict(eval_every=1000)  # records at epoch ends and the last step only
    straight = train(_cfg(steps=12, **ends), data=bundle)  # epochs 1 (7 steps) and 2 (5 of 7)
    out = str(tmp_path / "run")
    first = train(_cfg(steps=5, out_dir=out, **ends), data=bundle)
    assert [r["step"] for r in first.records] == [5]
    resumed = train(_cfg(steps=12, out_dir=out, resume=True, **ends), data=bundle)
    _same_weights(straight.model, resumed.model)
    assert [r["step"] for r in read_metrics(out)] == [5, 7, 12]
    # the epoch-end and final records see the same weights, hence the same test metrics
    for a, b in zip(straight.records, resumed.records[1:]):
        assert (a["step"], a["test_loss"], a["test_acc"]) == (b["step"], b["test_loss"],
                                                              b["test_acc"])


def test_ctrl_c_mid_epoch_resumes_bitwise_with_steps(tmp_path: Path) -> None:
    bundle = text_bundle(tmp_path)
    straight = train(_cfg(steps=11), data=bundle)
    cfg = _cfg(steps=11, out_dir=str(tmp_path / "run"))
    with pytest.raises(TrainingInterrupted):
        train(cfg, callbacks=[InterruptAt(9)], data=bundle)  # epoch 2, batch 2 of 7
    resumed = train(cfg.replace(resume=True), data=bundle)
    _same_weights(straight.model, resumed.model)
    strip = lambda rs: [{k: v for k, v in r.items() if "seconds" not in k} for r in rs]  # noqa
    assert strip(resumed.records) == strip(straight.records)


def test_text_grid_shift_changes_the_trajectory(tmp_path: Path) -> None:
    """Epoch 2 draws other windows than epoch 1 (a fixed grid would repeat them)."""
    bundle = text_bundle(tmp_path)
    loader = bundle.train_loader(16, seed=0)
    assert loader.offset(0) != loader.offset(1)


def test_text_evaluation_covers_every_test_window(tmp_path: Path) -> None:
    bundle = text_bundle(tmp_path)
    assert bundle.test_x.shape == (12, 8)  # 3 batches of 5, the last one short
    history = train(_cfg(steps=2, limit_batches=1, eval_every=1), data=bundle)
    model = history.model.eval()
    with torch.no_grad():
        logits = model(bundle.test_x).double()  # (12, 8, V)
    nll = logits.logsumexp(-1) - logits.gather(-1, bundle.test_y[..., None])[..., 0]
    assert history.records[-1]["test_loss"] == pytest.approx(nll.mean().item(), rel=1e-6)


def test_text_windows_follow_the_models_seq_len(tmp_path: Path) -> None:
    from hyperfree.experiments import DataCache
    from hyperfree.train import load_data

    path = tmp_path / "t.txt"
    path.write_text("abcdefghij" * 200, encoding="utf-8")
    base = dict(dataset="tinyshakespeare", data_dir=str(path), device="cpu")
    cases = [(dict(arch="gpt"), 64), (dict(arch="gpt", seq_len=16), 16),
             (dict(arch="char_lstm"), 128), (dict(arch="char_lstm", seq_len=32), 32)]
    cache = DataCache()
    for changes, T in cases:
        cfg = TrainConfig(**base, **changes)
        assert load_data(cfg, torch.device("cpu")).train_x.shape[1] == T
        assert cache.get(cfg).test_x.shape[1] == T
    assert len(cache) == 4
