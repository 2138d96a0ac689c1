"""Every benchmark loads, and every name it imports, also inside its functions, exists: a
benchmark is run by hand and rarely, so a name that moved away from under it would
otherwise be found only by the next person who measures."""
from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import pytest

import benchmarks

MODULES = sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__))


def imported_names(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every ``from module import name`` in the file, at any depth."""
    return [(node.module, alias.name) for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
            for alias in node.names]


def test_the_benchmarks_are_found() -> None:
    assert {"api_latency", "soak", "hardening"} <= set(MODULES)


def test_imports_inside_functions_are_seen() -> None:
    names = imported_names(Path(benchmarks.__path__[0]) / "hardening.py")
    assert ("backend.exceptions", "InvalidArchive") in names


@pytest.mark.parametrize("name", MODULES)
def test_a_benchmark_and_what_it_imports_load(name: str) -> None:
    module = importlib.import_module(f"benchmarks.{name}")
    if name not in ("common", "latency_proxy"):
        assert callable(getattr(module, "main", None)), f"benchmarks.{name} has no main()"
    for source, imported in imported_names(Path(module.__file__)):
        if source.split(".")[0] in ("backend", "simserver", "lifecycle", "storage", "client",
                                    "tests", "benchmarks"):
            assert hasattr(importlib.import_module(source), imported) or \
                importlib.util.find_spec(f"{source}.{imported}"), f"{source}.{imported}"
