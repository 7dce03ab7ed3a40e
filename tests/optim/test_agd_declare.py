"""Declarations, when wanted, are easy.

* ``AGD(model, infer=False)`` (the table and ``kinds=`` only) raises ONE ``ValueError`` that
  lists every undeclared parameter — its name, shape, owner class and that class's import path,
  a suggested KIND and why — and ends with code that declares them all; that code, executed
  as printed, makes the same strict construction succeed with the suggested kinds. With an
  ``example`` the suggestions are read from the forward (a packed ``(d_in, 3d)`` matrix is
  suggested as ``Kind("linear_in_out", blocks=3)``), without one from names and shapes.
* ``kinds_report()`` ends with code pinning every kind that was read or defaulted; run, it
  gives the same kinds with nothing read (strict mode passes).
* ``register_kinds`` takes a class, an import path or a bare class name; a bare name that
  means two classes in one model is refused naming both paths; a user's class named
  ``LayerNorm`` (shadowing torch's) is registered by class, path or name while
  ``nn.LayerNorm`` keeps its table entry.
* A parameter tied between an owner with a table entry and one without (BERT's
  ``cls.predictions.bias``) takes the covered owner's kind, from the table, nothing read.
Run: ``pytest tests/optim/test_agd_declare.py``.
"""
from __future__ import annotations

import re
import warnings

import pytest
import torch
from torch import nn

import hyperfree
from hyperfree.optim import Kind, register_kinds
from hyperfree.optim.agd import KindsNote

from . import handmade as M


def _strict_error(model, **kw) -> str:
    with pytest.raises(ValueError) as err:
        hyperfree.AGD(model, infer=False, **kw)
    return str(err.value)


def _code(message: str) -> str:
    """The paste-able block at the end of a message (its indented lines, unindented)."""
    block = message.split("paste", 1)[1].split("\n", 1)[1]
    return "\n".join(line[4:] for line in block.splitlines())


def test_one_error_lists_every_undeclared_parameter_with_paste_able_code(restore_kind_rules):
    torch.manual_seed(0)
    model, batch, _ = M.make_gpt()
    unknown = ["pos", "temp", "norm.weight"] + [f"blocks.{i}.{n}" for i in range(2) for n in (
        "n1.weight", "n1.bias", "n2.weight", "n2.bias", "attn.w_qkv")]
    message = _strict_error(model)
    lines = [line for line in message.splitlines() if line.startswith("  '")]
    assert sorted(re.match(r"  '([^']+)'", line)[1] for line in lines) == sorted(unknown)
    for line in lines:  # name, shape, class, its import path, suggested KIND, why
        assert re.search(rf"\(shape \([0-9, ]*\)\) of \w+ \({re.escape(M.__name__)}\.\w+\)", line)
        assert "register_kinds(" in line and "kinds={" in line
        assert re.search(r"suggested KIND \"\w+\": .+", line)
    assert f"from {M.__name__} import LayerNorm" in message
    namespace = {"model": model}
    exec(_code(message), namespace)  # registers by class, declares the rest per parameter
    with warnings.catch_warnings():
        warnings.simplefilter("error", KindsNote)  # nothing left to read or default
        opt = hyperfree.AGD(model, infer=False, kinds=namespace["kinds"])
    assert {i.origin for i in opt._infos.values()} <= {"table", "declared"}
    assert opt._infos[id(model.blocks[0].n1.weight)].kind == Kind("gain")  # named like one


def test_suggestions_come_from_the_forward_with_an_example():
    torch.manual_seed(0)
    model, batch, _ = M.make_gpt()
    message = _strict_error(model, example=M.example("gpt", batch))
    assert "'blocks.0.attn.w_qkv' (shape (16, 48))" in message
    line = next(x for x in message.splitlines() if "'blocks.0.attn.w_qkv'" in x)
    # a residual branch's projection: on one side of one forked sum, in a stream of 5 terms
    assert 'suggested KIND Kind("linear_in_out", blocks=3, forks=1, terms=5): read from the' \
        in line
    assert "from hyperfree.optim import Kind, register_kinds" in message


def test_kinds_report_pins_what_was_read(restore_kind_rules):
    torch.manual_seed(0)
    model, batch, _ = M.make_ssm()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KindsNote)
        opt = hyperfree.AGD(model, example=M.example("ssm", batch))
    report = opt.kinds_report()
    header = report.splitlines()[0].split()
    assert header == ["parameter", "shape", "kind", "from", "why"]
    assert "in_proj.weight" in report.split("paste:")[1]  # packed: not all Linears are
    namespace = {"model": model}
    exec(_code(report), namespace)
    assert namespace["opt"].param_groups[0]["kinds"] == opt.param_groups[0]["kinds"]
    pinned = hyperfree.AGD(model, infer=False, kinds=namespace["kinds"])
    assert pinned.param_groups[0]["kinds"] == opt.param_groups[0]["kinds"]


class Other:
    """A second class named LayerNorm, in another (pretend) module."""

    class LayerNorm(M.LayerNorm):
        pass


Other.LayerNorm.__module__ = "elsewhere.layers"


def test_register_kinds_by_class_path_or_bare_name(restore_kind_rules):
    torch.manual_seed(0)
    model, _, _ = M.make_gpt(norm=M.RMSNorm)  # one hand-written LayerNorm-free model
    path = f"{M.__name__}.RMSNorm"
    for key in (M.RMSNorm, path, "RMSNorm"):
        restore_kind_rules.RULES.pop(M.RMSNorm, None)
        restore_kind_rules.RULES.pop(path, None)
        restore_kind_rules.RULES.pop("RMSNorm", None)
        register_kinds(key, {"weight": "gain"})
        infos = {i.name: i for i in hyperfree.optim.classify(model, unknown="keep")}
        assert infos["norm.weight"].kind == Kind("gain"), key
        assert infos["blocks.0.n1.weight"].origin == "table", key
    with pytest.raises(ValueError, match="module class, 'package.module.Class' or a class name"):
        register_kinds("not a name", {"weight": "gain"})


def test_a_bare_name_that_means_two_classes_is_refused(restore_kind_rules):
    model = nn.Sequential(M.LayerNorm(4), Other.LayerNorm(4))
    register_kinds("LayerNorm", {"weight": "gain", "bias": "bias"})
    with pytest.raises(ValueError, match=r"'LayerNorm'.*elsewhere\.layers\.Other\.LayerNorm and "
                                         + re.escape(M.__name__) + r"\.LayerNorm"):
        hyperfree.optim.classify(model)


def test_a_class_shadowing_a_torch_name_works(restore_kind_rules):
    model = nn.Sequential(nn.Linear(4, 4), M.LayerNorm(4), nn.LayerNorm(4), nn.Linear(4, 2))
    assert hyperfree.optim.classify(model, unknown="keep")[2].kind is None  # 1.weight unknown
    register_kinds("LayerNorm", {"weight": "gain", "bias": "bias"})
    infos = hyperfree.optim.classify(model)
    assert [str(i.kind) for i in infos] == ["linear", "bias", "gain", "bias", "gain", "bias",
                                            "linear", "bias"]
    assert all(i.origin == "table" for i in infos)
    torch_ln = next(i for i in infos if i.name == "2.weight")  # still torch's own entry
    assert torch_ln.owner_paths == ("torch.nn.modules.normalization.LayerNorm",)


class Head(nn.Module):
    """BERT's prediction head: a Linear decoder whose bias is also the head's own ``bias``."""

    def __init__(self):
        super().__init__()
        self.decoder = nn.Linear(4, 10)
        self.bias = self.decoder.bias

    def forward(self, x):
        return self.decoder(x)


def test_a_tie_to_a_covered_owner_takes_its_kind_from_the_table():
    model = nn.Sequential(nn.Linear(3, 4), Head())
    with warnings.catch_warnings():
        warnings.simplefilter("error", KindsNote)
        opt = hyperfree.AGD(model, infer=False)
    info = opt._infos[id(model[1].bias)]
    assert info.kind == Kind("bias") and info.origin == "table"
    assert info.names == ("1.bias", "1.decoder.bias") and "tied" in info.reason
