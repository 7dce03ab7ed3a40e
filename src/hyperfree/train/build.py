"""What a run is built from: its device, its model and its data, from a :class:`TrainConfig`.

These are the harness's few decisions that depend on the dataset: ``resnet50`` on ImageNet is
the torchvision-style ``resnet50_imagenet``; a model's input kind must match the dataset's; a
text dataset is cut into windows of the model's context ``seq_len``; the loss defaults to
cross-entropy on text and to the AGD paper's square loss on images.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .config import TrainConfig
from .distributed import SINGLE, DistContext

__all__ = ["resolve_device", "build_model", "model_flags", "default_loss", "load_data"]


def resolve_device(name: str, dist: DistContext = SINGLE) -> torch.device:
    """``auto`` -> cuda if available else cpu; ``cuda`` -> this rank's GPU under DDP."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but CUDA is not available; "
                         "use --device cpu or auto")
    if name == "cuda" and dist.enabled:
        return torch.device("cuda", dist.local_rank)
    return torch.device(name)


def build_model(cfg: TrainConfig, info: Any) -> nn.Module:
    """``create_model`` for ``cfg.arch`` on dataset ``info`` (resnet50 on imagenet -> _imagenet)."""
    from hyperfree.models import create_model, get_model_info

    arch = cfg.arch
    if arch == "resnet50" and info.name == "imagenet":
        arch = "resnet50_imagenet"
    wanted = "tokens" if info.kind == "text" else "image"
    kind = get_model_info(arch).input_kind
    if kind != wanted:
        raise ValueError(f"model {arch!r} takes {kind} input but dataset {info.name!r} is "
                         f"{info.kind}; pick a matching --arch/--dataset pair")
    return create_model(arch, in_channels=info.in_channels, num_classes=info.num_classes,
                        image_size=info.image_size, **_given_flags(cfg))


def _given_flags(cfg: TrainConfig) -> dict[str, Any]:
    return dict(depth=cfg.depth, width=cfg.width, heads=cfg.heads, seq_len=cfg.seq_len,
                tie_weights=cfg.tie_weights)


def model_flags(cfg: TrainConfig) -> dict[str, Any]:
    """``cfg.arch``'s architecture flags, validated, with the model's defaults filled in.

    Checked before any data is loaded; ``seq_len`` (token models) also sets the text windows.
    """
    from hyperfree.models import resolve_flags

    return resolve_flags(cfg.arch, **_given_flags(cfg))


def default_loss(info: Any) -> str:
    """The objective when ``loss`` is not given: ``xent`` on text, else the paper's ``mse``."""
    return "xent" if info.kind == "text" else "mse"


def load_data(cfg: TrainConfig, device: torch.device) -> Any:
    """``cfg``'s dataset on ``device``; a text dataset in windows of the model's ``seq_len``."""
    from hyperfree.data import load_dataset

    flags = model_flags(cfg)
    window = {"seq_len": flags["seq_len"]} if "seq_len" in flags else {}
    return load_dataset(cfg.dataset, data_dir=cfg.data_dir, download=cfg.download,
                        device=device, **window)
