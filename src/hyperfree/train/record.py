"""The run directory: ``config.json`` (settings + environment) and ``metrics.jsonl``.

``config.json`` holds ``{"config": TrainConfig.to_dict(), "environment": {...}}`` where the
environment records the versions of python, torch and hyperfree, the git commit (when the code
runs from a checkout; failures ignored), the hostname, the device and the world size.
``metrics.jsonl`` holds one JSON object per finished epoch. Both are strict JSON: a number that
is NaN or infinite (say, a test loss that overflowed) is written as ``null`` and its key listed
under ``"nonfinite"``, never as the bare ``NaN``/``Infinity`` that JSON parsers reject.
"""
from __future__ import annotations

import json
import math
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

__all__ = ["CONFIG_NAME", "METRICS_NAME", "environment", "git_commit", "write_config",
           "read_config", "read_environment", "append_metrics", "write_metrics", "read_metrics",
           "strict_json"]

CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.jsonl"


def git_commit(directory: str | os.PathLike[str]) -> str | None:
    """``git rev-parse HEAD`` run in ``directory``; ``None`` if that fails for any reason."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True,
                             text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment(device: torch.device, world_size: int = 1) -> dict[str, Any]:
    """Versions, git commit, host and device of this process."""
    from hyperfree._version import __version__

    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "hyperfree": __version__,
        "git_commit": git_commit(Path(__file__).resolve().parent),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "device": str(device),
        "world_size": world_size,
        "num_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
    return env


def write_config(run_dir: Path, config: dict[str, Any], env: dict[str, Any],
                 extra: dict[str, Any] | None = None) -> None:
    """Write ``config.json`` (pretty, sorted keys)."""
    body = {"config": config, "environment": env, **(extra or {})}
    text = json.dumps(body, indent=2, sort_keys=True, allow_nan=False)
    tmp = run_dir / f".{CONFIG_NAME}.tmp"
    tmp.write_text(text + "\n")
    os.replace(tmp, run_dir / CONFIG_NAME)


def read_config(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``config`` part of ``run_dir/config.json``; FileNotFoundError/ValueError if bad."""
    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; is {run_dir} a hyperfree run directory?")
    try:
        return dict(json.loads(path.read_text())["config"])
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{path} is not a valid hyperfree config.json") from None


def read_environment(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``environment`` part of ``run_dir/config.json`` (threads, device, versions);
    FileNotFoundError/ValueError as :func:`read_config`."""
    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; is {run_dir} a hyperfree run directory?")
    try:
        return dict(json.loads(path.read_text())["environment"])
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{path} is not a valid hyperfree config.json") from None


def strict_json(record: dict[str, Any]) -> str:
    """``record`` as one line of strict JSON: non-finite numbers become ``null``, their keys are
    listed (sorted) under ``"nonfinite"``."""
    bad = sorted(k for k, v in record.items() if isinstance(v, float) and not math.isfinite(v))
    if bad:
        record = {**{k: None if k in bad else v for k, v in record.items()}, "nonfinite": bad}
    return json.dumps(record, allow_nan=False)


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """Append one epoch's record to ``metrics.jsonl``."""
    with open(run_dir / METRICS_NAME, "a") as fh:
        fh.write(strict_json(record) + "\n")


def write_metrics(run_dir: Path, records: list[dict[str, Any]]) -> None:
    """Rewrite ``metrics.jsonl`` with exactly ``records`` (used when resuming)."""
    text = "".join(strict_json(r) + "\n" for r in records)
    tmp = run_dir / f".{METRICS_NAME}.tmp"
    tmp.write_text(text)
    os.replace(tmp, run_dir / METRICS_NAME)


def read_metrics(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All records of ``run_dir/metrics.jsonl``; FileNotFoundError if it is missing."""
    path = Path(run_dir) / METRICS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; is {run_dir} a hyperfree run directory?")
    lines = path.read_text().splitlines()
    try:
        return [json.loads(line) for line in lines if line.strip()]
    except ValueError:
        raise ValueError(f"{path} has a line that is not JSON") from None
