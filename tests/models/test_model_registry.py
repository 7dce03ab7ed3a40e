"""The model registry's API: the registered names, defaults, and the ValueErrors for bad names
and flags (unknown model, a flag the model does not use — depth/width, and heads/seq_len/
tie_weights for models without them —, out-of-range or non-integer values, bad registrations).
Run: ``.venv/bin/python -m pytest -q tests/models``.
"""
from __future__ import annotations

from typing import Callable

import pytest
import torch
from torch import nn

from hyperfree.models import (ModelInfo, create_model, get_model_info, list_models,
                              register_model, resolve_flags)

EXPECTED = {"fcn", "vgg11", "vgg13", "vgg16", "vgg19", "resnet18", "resnet34", "resnet50",
            "resnet50_imagenet", "resnet_small", "char_lstm", "gpt"}
IMAGE = dict(in_channels=1, num_classes=10, image_size=28)


def test_list_models_is_sorted_and_complete() -> None:
    names = list_models()
    assert names == sorted(names)
    assert set(names) == EXPECTED


def test_get_model_info_fields() -> None:
    info = get_model_info("fcn")
    assert isinstance(info, ModelInfo)
    assert (info.name, info.input_kind, info.paper_exact) == ("fcn", "image", True)
    assert (info.default_depth, info.default_width) == (8, 256)
    lstm = get_model_info("char_lstm")
    assert (lstm.input_kind, lstm.paper_exact) == ("tokens", False)
    assert (lstm.default_depth, lstm.default_width) == (2, 256)
    assert callable(info.builder) and info.description


def test_names_are_case_insensitive() -> None:
    assert get_model_info(" VGG16 ").name == "vgg16"
    model = create_model("FCN", **IMAGE, depth=2, width=4)
    assert [m.weight.shape for m in model.modules() if isinstance(m, nn.Linear)] == [
        (4, 784), (10, 4)]


@pytest.mark.parametrize("lookup", [get_model_info, lambda n: create_model(n, **IMAGE)])
def test_unknown_name_lists_the_valid_names(lookup: Callable[[str], object]) -> None:
    with pytest.raises(ValueError, match="unknown model 'vgg17'") as err:
        lookup("vgg17")
    assert all(name in str(err.value) for name in EXPECTED)


@pytest.mark.parametrize("name", [n for n in list_models()
                                  if get_model_info(n).default_depth is None])
def test_depth_is_rejected_by_models_without_depth(name: str) -> None:
    with pytest.raises(ValueError, match=f"{name!r} has no --depth"):
        create_model(name, **IMAGE, depth=3, width=4)


def test_fcn_defaults() -> None:
    model = create_model("fcn", **IMAGE)
    shapes = [tuple(p.shape) for p in model.parameters()]
    assert shapes == [(256, 784)] + [(256, 256)] * 6 + [(10, 256)]


def test_width_and_depth_defaults_of_conv_models() -> None:
    with torch.device("meta"):
        vgg = create_model("vgg16", in_channels=3, num_classes=10, image_size=32)
        small = create_model("resnet_small", in_channels=3, num_classes=10, image_size=32)
    assert next(vgg.parameters()).shape == (64, 3, 3, 3)
    assert small.stem.weight.shape == (16, 3, 3, 3)
    assert [len(stage) for stage in small.stages] == [1, 1, 1]


@pytest.mark.parametrize("flags,match", [
    (dict(depth=1), "--depth for 'fcn' must be an integer >= 2, got 1"),
    (dict(width=0), "--width for 'fcn' must be an integer >= 1, got 0"),
    (dict(width=2.5), "--width .* got 2.5"),
    (dict(width=True), "--width .* got True"),
])
def test_bad_fcn_flags(flags: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_model("fcn", **IMAGE, **flags)


@pytest.mark.parametrize("field", ["in_channels", "num_classes", "image_size"])
def test_bad_shapes_for_image_models(field: str) -> None:
    with pytest.raises(ValueError, match=f"{field} must be an integer >= 1, got 0"):
        create_model("vgg11", **{**IMAGE, field: 0}, width=4)


def test_token_models_still_need_a_vocabulary() -> None:
    with pytest.raises(ValueError, match="num_classes must be an integer >= 1, got 0"):
        create_model("char_lstm", in_channels=1, num_classes=0, image_size=1)


def test_bad_registrations_are_rejected_without_side_effects() -> None:
    before = list_models()
    with pytest.raises(ValueError, match="lowercase"):
        register_model("MyNet", description="x")
    with pytest.raises(ValueError, match="input_kind 'audio'"):
        register_model("mynet", description="x", input_kind="audio")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'fcn' is already registered"):
        register_model("fcn", description="x")(lambda **kw: nn.Identity())
    assert list_models() == before


@pytest.mark.parametrize("flag,value", [("heads", 2), ("seq_len", 16), ("tie_weights", True)])
@pytest.mark.parametrize("name", ["fcn", "vgg11", "resnet_small"])
def test_transformer_flags_are_refused_by_models_without_them(name: str, flag: str,
                                                              value: object) -> None:
    option = "--" + flag.replace("_", "-")
    with pytest.raises(ValueError, match=f"model {name!r} has no {option} \\(got {value!r}\\)"):
        create_model(name, **IMAGE, **{flag: value})


def test_char_lstm_takes_seq_len_but_no_heads() -> None:
    assert resolve_flags("char_lstm") == {"depth": 2, "width": 256, "seq_len": 128}
    assert resolve_flags("char_lstm", seq_len=32)["seq_len"] == 32
    with pytest.raises(ValueError, match="'char_lstm' has no --heads"):
        resolve_flags("char_lstm", heads=2)


def test_gpt_defaults_and_flag_checks() -> None:
    assert resolve_flags("gpt") == {"depth": 4, "width": 128, "heads": 4, "seq_len": 64,
                                    "tie_weights": False}
    info = get_model_info("gpt")
    assert (info.input_kind, info.paper_exact) == ("tokens", False)
    model = create_model("gpt", in_channels=0, num_classes=5, image_size=0, depth=1, width=6,
                         heads=3, seq_len=4, tie_weights=True)
    assert (len(model.blocks), model.cfg.heads, model.cfg.seq_len) == (1, 3, 4)
    assert model.head.weight is model.tok_emb.weight
    with pytest.raises(ValueError, match="--heads for 'gpt' must be an integer >= 1, got 0"):
        resolve_flags("gpt", heads=0)
    with pytest.raises(ValueError, match="--seq-len for 'gpt' must be an integer >= 1, got 2.5"):
        resolve_flags("gpt", seq_len=2.5)
    with pytest.raises(ValueError, match="--tie-weights for 'gpt' must be True or False, got 1"):
        resolve_flags("gpt", tie_weights=1)
    with pytest.raises(ValueError, match="unknown model flag\\(s\\) colour"):
        resolve_flags("gpt", colour=3)
