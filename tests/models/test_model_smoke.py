"""Registry-wide smoke tests (timm style), parametrised over ``list_models()``.

Every registered model is built small and run forward + backward on a tiny batch: output shape,
finite values, a non-zero gradient for every parameter, per-sample independence in eval mode,
seeded reproducibility, and that ``paper_exact`` is true exactly when the model has only 2-D/4-D
parameters, no biases and no affine norms (what AGD's paper-exact mode needs).
Run: ``.venv/bin/python -m pytest -q tests/models``.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from hyperfree.models import ModelInfo, create_model, get_model_info, list_models

IMAGE_MODELS = list_models(input_kind="image")
TOKEN_MODELS = list_models(input_kind="tokens")
# (in_channels, image_size): Fashion-MNIST and CIFAR shapes; the ImageNet net also at 64×64.
IMAGE_SHAPES = [(1, 28), (3, 32)]
CASES = [(n, c, s) for n in IMAGE_MODELS for c, s in IMAGE_SHAPES] + [("resnet50_imagenet", 3, 64)]


def small_kwargs(info: ModelInfo) -> dict[str, int]:
    """Tiny width, and the smallest depth that still repeats a layer (if the model has depth)."""
    kwargs = {"width": 8}
    if info.default_depth is not None:
        kwargs["depth"] = max(info.min_depth, 2)
    return kwargs


def assert_every_param_has_gradient(model: nn.Module) -> None:
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} received no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def test_every_model_has_a_known_input_kind() -> None:
    assert sorted(IMAGE_MODELS + TOKEN_MODELS) == list_models()
    assert IMAGE_MODELS and TOKEN_MODELS


@pytest.mark.parametrize("name,in_channels,image_size", CASES)
def test_image_model_forward_backward(name: str, in_channels: int, image_size: int) -> None:
    info = get_model_info(name)
    model = create_model(name, in_channels=in_channels, num_classes=7, image_size=image_size,
                         **small_kwargs(info))
    x = torch.randn(4, in_channels, image_size, image_size)
    out = model(x)
    assert out.shape == (4, 7)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    assert_every_param_has_gradient(model)


@pytest.mark.parametrize("name", TOKEN_MODELS)
def test_token_model_forward_backward(name: str) -> None:
    info = get_model_info(name)
    # in_channels / image_size are ignored by token models, so nonsense values must be accepted.
    model = create_model(name, in_channels=0, num_classes=11, image_size=0, **small_kwargs(info))
    tokens = torch.randint(0, 11, (3, 5), dtype=torch.int64)
    out = model(tokens)
    assert out.shape == (3, 5, 11)
    assert torch.isfinite(out).all()
    nn.functional.cross_entropy(out.reshape(-1, 11), tokens.roll(-1, 1).reshape(-1)).backward()
    assert_every_param_has_gradient(model)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_eval_mode_treats_samples_independently(name: str) -> None:
    model = create_model(name, in_channels=3, num_classes=5, image_size=32,
                         **small_kwargs(get_model_info(name)))
    model(torch.randn(6, 3, 32, 32))  # one training pass to move BatchNorm running statistics
    model.eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[:1], model(x[:1]))


@pytest.mark.parametrize("name", list_models())
def test_construction_is_reproducible_under_a_seed(name: str) -> None:
    info = get_model_info(name)
    models = []
    for _ in range(2):
        torch.manual_seed(123)
        models.append(create_model(name, in_channels=1, num_classes=3, image_size=28,
                                   **small_kwargs(info)))
    for (k, a), (_, b) in zip(models[0].named_parameters(), models[1].named_parameters()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("name", list_models())
def test_paper_exact_flag_matches_the_parameters(name: str) -> None:
    info = get_model_info(name)
    model = create_model(name, in_channels=3, num_classes=10, image_size=32, **small_kwargs(info))
    only_2d_4d = all(p.ndim in (2, 4) for p in model.parameters())
    no_bias = all(getattr(m, "bias", None) is None for m in model.modules()
                  if isinstance(m, (nn.Linear, nn.Conv2d)))
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    no_affine = all(not m.affine for m in norms)
    only_linear_maps = all(isinstance(m, (nn.Linear, nn.Conv2d)) for m in model.modules()
                           if any(True for _ in m.parameters(recurse=False)))
    assert info.paper_exact == (only_2d_4d and no_bias and no_affine and only_linear_maps)


def _batch(info: ModelInfo) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    if info.input_kind == "tokens":
        x = torch.randint(0, 10, (4, 12), generator=gen)
        return x, torch.roll(x, -1, dims=1)
    size = 64 if info.name == "resnet50_imagenet" else 32
    return torch.randn(8, 3, size, size, generator=gen), torch.randint(0, 10, (8,), generator=gen)


@pytest.mark.parametrize("name", list_models())
def test_every_model_trains_with_default_agd(name: str) -> None:
    """AGD (default preset, its own init) on every registered model: the loss on a fixed batch
    falls over 8 steps, stays finite, and every parameter with a gradient moves."""
    from hyperfree import AGD

    info = get_model_info(name)
    torch.manual_seed(0)
    model = create_model(name, in_channels=3, num_classes=10, image_size=32, **small_kwargs(info))
    opt = AGD(model)
    opt.init_weights(torch.Generator().manual_seed(0))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x, y = _batch(info)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x).flatten(0, -2), y.flatten())
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert losses[-1] < losses[0], losses
    for n, p in model.named_parameters():
        if p.grad is not None and p.grad.abs().sum() > 0:
            assert not torch.equal(p.detach(), before[n]), f"{n} did not move"
