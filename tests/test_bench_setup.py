"""The benchmark runs from the README's own setup: every module under bench/ imports, and every
package any of them imports (at the top or inside a function, as report.py imports matplotlib
only to draw) is installed by `make setup-dev`."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
TESTS = Path(__file__).resolve().parent
MODULES = sorted(BENCH.rglob("*.py"))


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(BENCH).with_suffix("").parts).removesuffix(".__init__")


def imported_roots(path: Path) -> set[str]:
    """Top-level names of the absolute imports anywhere in a file."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_bench_module_imports(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    importlib.import_module(module_name(path))


def test_every_package_the_benchmark_imports_is_installed() -> None:
    own = {module_name(p).split(".")[0] for p in MODULES} | {p.stem for p in TESTS.glob("*.py")}
    wanted = set().union(*(imported_roots(p) for p in MODULES))
    third_party = wanted - own - set(sys.stdlib_module_names) - {"ov_llm_server"}
    assert "matplotlib" in third_party  # the scan does see imports inside functions
    missing = sorted(name for name in third_party if importlib.util.find_spec(name) is None)
    assert not missing, f"bench/ imports {missing}, which `make setup-dev` does not install"
