"""The package's layers: every module imports only its own package or a lower layer.

From the bottom up: the shared pieces (``_registry``, ``_version``); the optimisers (``optim``)
and the towers (``hyper``), which know nothing of each other; models and datasets (``models``,
``data``), also mutually independent; the training harness (``train``); the experiment suite
(``experiments``); the command line (``cli``); and the package's face (``hyperfree/__init__``,
``__main__``). Every ``import`` and ``from ... import`` in every module is read with ``ast``,
including those inside functions, and relative imports are resolved. No module may import a
``hyperfree`` module by string (``importlib.import_module``/``__import__``): the direction of
every dependency is visible in the import statements. And no module names a path outside the
package (``../shared/...``): data locations come from the caller.

Run: .venv/bin/python -m pytest -q tests/test_layering.py
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import hyperfree

ROOT = Path(hyperfree.__file__).resolve().parent
LAYER = {"_registry": 0, "_version": 0, "optim": 1, "hyper": 1, "models": 2, "data": 2,
         "train": 3, "experiments": 4, "cli": 5, "__main__": 6, "": 6}
MODULES = sorted(p for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts)


def _name(path: Path) -> tuple[str, bool]:
    """(dotted module name, is it a package's __init__) of a file under ROOT."""
    parts = ["hyperfree", *path.relative_to(ROOT).with_suffix("").parts]
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def _unit(module: str) -> str:
    """The layer unit of a dotted ``hyperfree`` module name ("" for the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _is_module(dotted: str) -> bool:
    rel = Path(*dotted.split(".")[1:])
    return (ROOT / rel).is_dir() or (ROOT / rel).with_suffix(".py").is_file()


def _imports(source: str, name: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, dotted target) of every hyperfree import in module ``name`` of text ``source``."""
    package = name if is_package else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{target}.{alias.name}"
                out.append((node.lineno, sub if _is_module(sub) else target))
    return [(line, t) for line, t in out if t == "hyperfree" or t.startswith("hyperfree.")]


def test_every_unit_has_a_layer() -> None:
    units = {_unit(_name(p)[0]) for p in MODULES}
    assert units <= set(LAYER), f"place {sorted(units - set(LAYER))} in LAYER"


def _violations(source: str, name: str, is_package: bool = False) -> list[str]:
    own = _unit(name)
    return [f"line {line}: {target}" for line, target in _imports(source, name, is_package)
            if _unit(target) != own and LAYER[_unit(target)] >= LAYER[own]]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path: Path) -> None:
    name, is_package = _name(path)
    bad = _violations(path.read_text(), name, is_package)
    assert not bad, f"{name} (layer {LAYER[_unit(name)]}) imports upward or sideways: {bad}"


def _string_imports(source: str) -> list[str]:
    """``hyperfree`` module names a module could import by string: the names its non-docstring
    string constants give, if it calls ``import_module`` or ``__import__`` at all."""
    tree = ast.parse(source)
    docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    if not any(getattr(c.func, "attr", getattr(c.func, "id", "")) in ("import_module",
                                                                         "__import__")
               for c in calls):
        return []
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
            and isinstance(n.value, str) and id(n) not in docstrings
            and n.value.startswith("hyperfree.")]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_import_by_string(path: Path) -> None:
    found = _string_imports(path.read_text())
    assert not found, f"{path.name} may import {found} by string; import it explicitly"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_repository_paths(path: Path) -> None:
    """The library reads no file of this repository's surroundings (``../shared/...``)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
    found = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
             and isinstance(n.value, str) and id(n) not in docstrings
             and ("../" in n.value or "shared/" in n.value)]
    assert not found, f"{path.name} names repository paths {found}; let the caller pass them"


def test_the_checker_sees_upward_and_sideways_imports() -> None:
    """The rule is not vacuous: planted bad imports are resolved and reported."""
    source = ("from ..train import optimizers\nimport hyperfree.cli\nfrom .. import hyper\n"
              "from . import agd\nfrom hyperfree._registry import Registry\n")
    targets = [t for _, t in _imports(source, "hyperfree.optim.planted")]
    assert targets == ["hyperfree.train.optimizers", "hyperfree.cli", "hyperfree.hyper",
                       "hyperfree.optim.agd", "hyperfree._registry"]
    assert _violations(source, "hyperfree.optim.planted") == [
        "line 1: hyperfree.train.optimizers", "line 2: hyperfree.cli", "line 3: hyperfree.hyper"]
    assert _violations("from ..models import fcn\n", "hyperfree.data", is_package=True) == [
        "line 1: hyperfree.models.fcn"]
    loader = ('"""Doc naming hyperfree.train."""\nimport importlib\n'
              'PLUGINS = ["hyperfree.hyper.integration"]\n'
              'for m in PLUGINS:\n    importlib.import_module(m)\n')
    assert _string_imports(loader) == ["hyperfree.hyper.integration"]
    assert _string_imports(loader.replace("importlib.import_module(m)", "print(m)")) == []
