"""The layout's promise: where a module lives says which process runs it.

Engine modules (``engine/core``) import nothing of the HTTP side, the converter nothing of
the engine; what both read from a model's files lives in modules of neither
(``model_files.py``, ``encoder_config.py``, ``registry.py``). Every import statement counts,
those inside functions too, and so does everything an imported module imports in turn.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ov_llm_server

ROOT = Path(ov_llm_server.__file__).parent
HTTP_SIDE = (
    "ov_llm_server.app",
    "ov_llm_server.capabilities",
    "ov_llm_server.engine.client",
    "ov_llm_server.engine.supervisor",
    "ov_llm_server.model_manager",
    "ov_llm_server.protocol",
    "ov_llm_server.routes",
    "ov_llm_server.serving",
)
ENGINE = ("ov_llm_server.engine.core",)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in ROOT.rglob("*.py")}


def imports_of(name: str) -> set[str]:
    """The project's modules that ``name``'s source imports anywhere in it."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:  # relative: from the package, one level up per extra dot
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                target = f"{base}.{target}" if target else base
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return {module for module in found if module in MODULES}


def reached_from(package: str) -> set[str]:
    todo = [name for name in MODULES if name == package or name.startswith(package + ".")]
    seen = set(todo)
    while todo:
        for module in imports_of(todo.pop()) - seen:
            seen.add(module)
            todo.append(module)
    return seen


def test_relative_imports_are_resolved() -> None:
    assert "ov_llm_server.engine.messages" in imports_of("ov_llm_server.engine.core.rerank")
    assert "ov_llm_server.engine.core.faults" in imports_of("ov_llm_server.engine.core.rerank")


@pytest.mark.parametrize(
    ("package", "foreign"),
    [("ov_llm_server.engine.core", HTTP_SIDE), ("ov_llm_server.convert", HTTP_SIDE + ENGINE)],
)
def test_a_process_imports_only_its_own_modules(package: str, foreign: tuple[str, ...]) -> None:
    assert sorted(m for m in reached_from(package) if m.startswith(foreign)) == []
