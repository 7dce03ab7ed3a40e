"""``benchmarks/hf_vision.py``: a Hugging Face ViT and ConvNeXt trained as a user would.

AGD takes both with no declaration (ConvNeXt's depthwise convs read as grouped convs, each one
plan unit; ViT's patch embedding a conv with 1-channel cells); a short run on a slice of
Fashion-MNIST trains (its accuracy beats chance on the training images it fit) and is
reproducible; ``agd@G`` multiplies every tensor's step; AdamW's schedule ends
at zero; a bad variant or model is refused by name.
"""
from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

import hyperfree
from hyperfree.data import load_dataset

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hv(load_benchmark):
    return load_benchmark("hf_vision")


@pytest.fixture(scope="module")
def small():
    data = load_dataset("fashion-mnist")
    return dataclasses.replace(data, train_x=data.train_x[:1024], train_y=data.train_y[:1024],
                               test_x=data.train_x[:256], test_y=data.train_y[:256])


def _kind_line(opt: hyperfree.AGD, name: str) -> str:
    return next(line for line in opt.kinds_report().splitlines() if line.startswith(name + " "))


def test_agd_reads_both_models_with_no_declaration(hv):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cnx = hv.build("convnext")
        opt = hyperfree.AGD(cnx)
        cnx(pixel_values=torch.zeros(2, 1, 28, 28))  # the kinds still pending are read here
        vit = hv.build("vit")
        vopt = hyperfree.AGD(vit)
    assert "conv(groups=32, " in _kind_line(opt, "convnext.encoder.stages.0.layers.0.dwconv.weight")
    line = _kind_line(vopt, "vit.embeddings.patch_embeddings.projection.weight")
    assert "(64, 1, 4, 4)" in line and " conv " in line


@pytest.mark.parametrize("name", ["vit", "convnext"])
def test_a_short_run_trains(hv, small, name):
    acc, train = hv.run(small, name, "agd", 2, seed=0)  # 16 steps of 128
    assert 0.3 < acc <= 1.0 and train < 2.25  # chance 0.1, ln 10 = 2.30


def test_a_run_is_reproducible(hv, small):
    assert hv.run(small, "convnext", "agd", 1, seed=1) == hv.run(small, "convnext", "agd", 1,
                                                                 seed=1)


def test_the_gain_variant_multiplies_every_step_and_adamw_decays_to_zero(hv):
    model = hv.build("vit")
    opt, sched = hv._optimiser(model, "agd@2", 10, 0, model_init=True)
    assert sched is None and {g["gain"] for g in opt.param_groups} == {2.0}
    opt, sched = hv._optimiser(model, "adamw-0.003", 40, 0, model_init=True)
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert max(lrs) == pytest.approx(0.003) and lrs[0] < 0.003
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_bad_names_are_refused(hv):
    with pytest.raises(ValueError, match="sgd-0.1"):
        hv._optimiser(hv.build("vit"), "sgd-0.1", 10, 0, model_init=True)
    with pytest.raises(ValueError, match="resnet"):
        hv.build("resnet")
