"""``benchmarks/epoch.py``: every path runs and is printed; ``--preset`` adds the plain loop
with another AGD preset beside the default's (the side-by-side figure of a default change);
an unknown preset is refused by name."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def epoch(load_benchmark):
    return load_benchmark("epoch")


def test_a_preset_runs_beside_the_default(epoch, capsys):
    epoch.main(["--repeats", "1", "--limit-batches", "2", "--threads", "1",
                "--skip-dataloader", "--preset", "spectral-damped", "--preset", "paper"])
    out = capsys.readouterr().out.splitlines()
    rows = {line.rsplit(maxsplit=3)[0].strip(): line.split()[-1]
            for line in out if line.startswith(("plain", "harness"))}
    assert set(rows) == {"harness (AGD)", "plain (Adam)", "plain (AGD)",
                         "plain (AGD spectral-damped)", "plain (AGD paper)"}
    assert rows["plain (Adam)"] == "1.00x" and all(v.endswith("x") for v in rows.values())


def test_an_unknown_preset_is_refused(epoch, capsys):
    with pytest.raises(SystemExit):
        epoch.main(["--preset", "adamw"])
    assert "invalid choice: 'adamw'" in capsys.readouterr().err


def test_plain_agd_uses_the_preset_named(epoch, monkeypatch):
    built = []
    real = epoch.AGD
    monkeypatch.setattr(epoch, "AGD", lambda model, preset: built.append(preset) or
                        real(model, preset=preset))
    x, y = epoch.torch.randn(256, 1, 28, 28), epoch.torch.randint(0, 10, (256,))
    epoch.plain_epoch(x, y, 0, 1, "agd")
    epoch.plain_epoch(x, y, 0, 1, "agd", "spectral-damped")
    assert built == [epoch.DEFAULT_PRESET, "spectral-damped"]
