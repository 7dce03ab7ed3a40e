"""Model registry (timm style): the AGD paper's architectures plus hypergradient-experiment models.

>>> from hyperfree.models import create_model, list_models
>>> model = create_model("fcn", in_channels=1, num_classes=10, image_size=28, depth=4, width=64)

Registered names: ``fcn``, ``vgg11``/``13``/``16``/``19``, ``resnet18``/``34``/``50`` (CIFAR
pre-activation), ``resnet50_imagenet``, ``resnet_small``, and the token models ``char_lstm`` and
``gpt`` (a pre-norm causal transformer).
Importing this package imports every family module, which registers its variants.
"""
from __future__ import annotations

from . import fcn, gpt, lstm, resnet, vgg
from ._registry import (MODEL_FLAGS, ModelInfo, create_model, get_model_info, list_models,
                        register_model, resolve_flags)

__all__ = ["MODEL_FLAGS", "ModelInfo", "create_model", "get_model_info", "list_models",
           "register_model", "resolve_flags", "fcn", "gpt", "lstm", "resnet", "vgg"]
