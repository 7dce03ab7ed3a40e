"""Architecture checks against independent descriptions of each family.

* ``fcn``: layer shapes, no biases, and the forward pass equal to a NumPy re-implementation of
  SPEC §1.2 (``sqrt(2)·relu`` after every layer but the last), plus the ``sqrt(2)`` factor alone.
* ``vgg*``: conv count and channel progression of the standard cfgs, pooling skipped at 1×1.
* ResNets: weight counts derived from torchvision's published totals (11,689,512 for ResNet-18,
  21,797,672 for ResNet-34, 25,557,032 for ResNet-50) and the shape of the final feature map.
Run: ``.venv/bin/python -m pytest -q tests/models``.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from hyperfree.models import create_model


def n_weights(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- fcn ------------------------------------------------------------------------------------

def test_fcn_layer_shapes_and_no_bias() -> None:
    model = create_model("fcn", in_channels=3, num_classes=10, image_size=8, depth=5, width=16)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [tuple(m.weight.shape) for m in linears] == [(16, 192), (16, 16), (16, 16), (16, 16),
                                                        (10, 16)]
    assert all(m.bias is None for m in linears)


@pytest.mark.parametrize("depth", [2, 3, 6])
def test_fcn_matches_numpy_formula(depth: int) -> None:
    model = create_model("fcn", in_channels=2, num_classes=4, image_size=5, depth=depth,
                         width=12).double()
    x = torch.randn(7, 2, 5, 5, dtype=torch.float64)
    weights = [p.detach().numpy() for p in model.parameters()]
    h = x.numpy().reshape(7, -1).T  # (d_in, B)
    for w in weights[:-1]:
        h = np.sqrt(2.0) * np.maximum(w @ h, 0.0)
    expected = (weights[-1] @ h).T
    np.testing.assert_allclose(model(x).detach().numpy(), expected, rtol=1e-12, atol=1e-12)


def test_fcn_hidden_activation_is_sqrt2_relu() -> None:
    # depth 2, first layer = identity: f(x) = W2 · sqrt(2) · relu(x).
    model = create_model("fcn", in_channels=1, num_classes=3, image_size=2, depth=2, width=4)
    first, last = (m for m in model.modules() if isinstance(m, nn.Linear))
    with torch.no_grad():
        first.weight.copy_(torch.eye(4))
        last.weight.copy_(torch.ones(3, 4))
    x = torch.tensor([[1.0, -2.0, 3.0, -4.0]]).reshape(1, 1, 2, 2)
    torch.testing.assert_close(model(x), torch.full((1, 3), 4.0 * 2 ** 0.5))


# --- vgg ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,n_convs", [("vgg11", 8), ("vgg13", 10), ("vgg16", 13),
                                          ("vgg19", 16)])
def test_vgg_convs_and_channels(name: str, n_convs: int) -> None:
    model = create_model(name, in_channels=3, num_classes=10, image_size=32, width=4)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == n_convs
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    widths = [c.out_channels for c in convs]
    assert widths[0] == 4 and widths[-1] == 32 and sorted(set(widths)) == [4, 8, 16, 32]
    assert widths == sorted(widths)
    assert n_weights(model) == sum(c.weight.numel() for c in convs) + 32 * 10


@pytest.mark.parametrize("image_size,n_pools", [(28, 4), (32, 5), (8, 3), (1, 0)])
def test_vgg_skips_pooling_at_one_pixel(image_size: int, n_pools: int) -> None:
    model = create_model("vgg11", in_channels=1, num_classes=3, image_size=image_size, width=4)
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == n_pools
    assert model(torch.randn(2, 1, image_size, image_size)).shape == (2, 3)


def test_vgg16_weight_count() -> None:
    # torchvision vgg16 features: 14,714,688 params of which 4,224 are conv biases.
    with torch.device("meta"):
        model = create_model("vgg16", in_channels=3, num_classes=100, image_size=32)
    assert n_weights(model) == 14_714_688 - 4_224 + 512 * 100


# --- resnets --------------------------------------------------------------------------------

# torchvision ImageNet totals minus BatchNorm affine (2 per BN channel) and the fc bias.
TV_WEIGHTS = {"resnet18": 11_689_512 - 2 * 4_800 - 1_000,
              "resnet34": 21_797_672 - 2 * 8_512 - 1_000,
              "resnet50": 25_557_032 - 2 * 26_560 - 1_000}
TV_FC_IN = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
def test_cifar_resnet_weight_count(name: str) -> None:
    # Same body as torchvision; 3×3 stem instead of 7×7; 10-way fc; shortcut BNs carry no weights.
    expected = TV_WEIGHTS[name] - 64 * 3 * 49 + 64 * 3 * 9 - TV_FC_IN[name] * 990
    with torch.device("meta"):
        model = create_model(name, in_channels=3, num_classes=10, image_size=32)
    assert n_weights(model) == expected


def test_resnet50_imagenet_weight_count_and_layout() -> None:
    with torch.device("meta"):
        model = create_model("resnet50_imagenet", in_channels=3, num_classes=1000, image_size=224)
    assert n_weights(model) == TV_WEIGHTS["resnet50"]
    assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2)
    # v1.5: the stride-2 of a downsampling bottleneck sits in its 3×3 conv.
    first = model.layers[1][0]
    assert first.conv1.stride == (1, 1) and first.conv2.stride == (2, 2)


def feature_map_shape(model: nn.Module, norm: nn.Module, x: torch.Tensor) -> tuple[int, ...]:
    seen: list[tuple[int, ...]] = []
    handle = norm.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
    model(x)
    handle.remove()
    return seen[0]


@pytest.mark.parametrize("name,size,expected", [
    ("resnet18", 32, (2, 64, 4, 4)), ("resnet50", 32, (2, 256, 4, 4)),
    ("resnet_small", 32, (2, 32, 8, 8)), ("resnet_small", 28, (2, 32, 7, 7)),
])
def test_preact_final_feature_map(name: str, size: int, expected: tuple[int, ...]) -> None:
    model = create_model(name, in_channels=3, num_classes=10, image_size=size, width=8)
    assert feature_map_shape(model, model.bn, torch.randn(2, 3, size, size)) == expected


def test_resnet50_imagenet_final_feature_map() -> None:
    model = create_model("resnet50_imagenet", in_channels=3, num_classes=10, image_size=64,
                         width=8)
    assert feature_map_shape(model, model.layers, torch.randn(2, 3, 64, 64)) == (2, 256, 2, 2)


@pytest.mark.parametrize("depth", [1, 3])
def test_resnet_small_depth_is_blocks_per_stage(depth: int) -> None:
    model = create_model("resnet_small", in_channels=1, num_classes=10, image_size=28,
                         depth=depth, width=4)
    assert [len(stage) for stage in model.stages] == [depth] * 3
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 2 * 3 * depth + 2  # stem, two per block, two projection shortcuts


def test_char_lstm_layers() -> None:
    model = create_model("char_lstm", in_channels=1, num_classes=30, image_size=1, depth=3,
                         width=16)
    assert model.lstm.num_layers == 3 and model.lstm.hidden_size == 16
    assert model.embed.weight.shape == (30, 16) and model.head.weight.shape == (30, 16)
