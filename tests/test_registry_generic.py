"""The generic registry behind models, datasets, optimisers and experiments: lowercase names,
case-insensitive look-up, duplicate refusal (an equal entry again is a no-op), a one-line error
that lists the choices, and the four domain registries really sharing it.

Run: .venv/bin/python -m pytest -q tests/test_registry_generic.py
"""
from __future__ import annotations

import dataclasses

import pytest

from hyperfree._registry import Registry


@dataclasses.dataclass(frozen=True)
class _Info:
    name: str
    size: int


def test_register_get_names_contains() -> None:
    reg: Registry[_Info] = Registry("widget")
    a, b = _Info("a", 1), _Info("b-2", 2)
    assert reg.register("a", a) is a
    reg.register("b-2", b)
    assert reg.get("a") is a and reg.get("  B-2 ") is b
    assert reg.names() == ["a", "b-2"] and list(reg) == [a, b] and len(reg) == 2
    assert "A" in reg and "c" not in reg and 3 not in reg
    assert reg.unregister("a") is a and reg.names() == ["b-2"]


def test_duplicates_refused_but_equal_entry_is_a_no_op() -> None:
    reg: Registry[_Info] = Registry("widget")
    reg.register("a", _Info("a", 1))
    reg.register("a", _Info("a", 1))  # re-importing a module registers equal entries again
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        reg.register("a", _Info("a", 2))
    assert reg.get("a").size == 1


@pytest.mark.parametrize("name", ["", "Caps", " pad", 3])
def test_bad_names_are_refused(name: object) -> None:
    reg: Registry[int] = Registry("widget")
    with pytest.raises(ValueError, match="must be non-empty lowercase"):
        reg.register(name, 1)  # type: ignore[arg-type]
    assert len(reg) == 0


def test_unknown_name_is_one_line_listing_the_choices() -> None:
    reg: Registry[int] = Registry("widget", hint=" or a number")
    reg.register("x", 1)
    reg.register("y", 2)
    with pytest.raises(ValueError) as err:
        reg.get("z")
    assert str(err.value) == "unknown widget 'z'; choose one of x, y or a number"
    with pytest.raises(ValueError, match="unknown widget"):
        reg.unregister("z")


def test_the_four_domains_share_the_one_class() -> None:
    from hyperfree.data import _registry as data_registry
    from hyperfree.experiments import _spec
    from hyperfree.models import _registry as model_registry
    from hyperfree.train import optimizers

    kinds = {m._REGISTRY.kind for m in (data_registry, _spec, model_registry, optimizers)}
    assert kinds == {"dataset", "experiment", "model", "optimiser"}
    for module in (data_registry, _spec, model_registry, optimizers):
        assert type(module._REGISTRY) is Registry
