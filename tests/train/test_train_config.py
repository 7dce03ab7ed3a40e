"""TrainConfig validation (one-line ValueErrors naming the value), dict round trip, and which
config changes make a stored run non-resumable."""
from __future__ import annotations

import pytest

from hyperfree.train import TrainConfig, check_resumable


@pytest.mark.parametrize("changes, match", [
    ({"loss": "l1"}, "loss 'l1'"),
    ({"epochs": 0}, "epochs must be an integer >= 1 or 'auto', got 0"),
    ({"train_bs": 2.5}, "train_bs"),
    ({"device": "tpu"}, "device 'tpu'"),
    ({"limit_batches": 0}, "limit_batches"),
    ({"resume": True}, "resume=True needs out_dir"),
])
def test_bad_settings_raise_value_error(changes: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TrainConfig(**changes)


def test_dict_round_trip_and_unknown_keys() -> None:
    cfg = TrainConfig(arch="vgg11", lr=0.1, optimizer="sgd", epochs=3)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown config field"):
        TrainConfig.from_dict({**cfg.to_dict(), "colour": "red"})


def test_resume_allows_more_epochs_but_not_another_arch() -> None:
    stored = TrainConfig(epochs=1).to_dict()
    check_resumable(stored, TrainConfig(epochs=5, device="cpu"))  # allowed
    for field, value in [("arch", "vgg11"), ("dataset", "mnist"), ("optimizer", "adam"),
                         ("seed", 1)]:
        with pytest.raises(ValueError, match=f"{field}="):
            check_resumable(stored, TrainConfig(**{field: value}))

