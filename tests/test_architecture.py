"""The house's layers, read from the source: who may import whom, and no import cycles.

ARCHITECTURE.md: the core (``cryofac.errors``, ``cryofac.config``, ``cryofac.run_folder``,
``cryofac.fileio``, ``cryofac.migrations``) is the leaf every part may use; ``pipeline`` uses
nothing else of ours (and no Flask or SQLAlchemy: it runs on bare GPU nodes);
``instrument_env`` does not know the portal; ``workflows`` shells out to the pipeline's
commands; ``portal`` may use ``instrument_env``; the application layer (``cryofac.cli``,
``cryofac.demo``) sits above all. Every import counts, also those inside functions: a lazy
import is still a dependency.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("cryofac", "pipeline", "workflows", "instrument_env", "portal")
CORE = (
    "cryofac",
    *(f"cryofac.{m}" for m in ("errors", "config", "run_folder", "fileio", "migrations")),
)
APP = ("cryofac.cli", "cryofac.config_cli", "cryofac.demo")

#: part -> prefixes of modules (ours or third-party) it must never import
FORBIDDEN = {
    "core": ("pipeline", "workflows", "instrument_env", "portal", *APP, "flask", "sqlalchemy"),
    "pipeline": ("workflows", "instrument_env", "portal", *APP, "flask", "sqlalchemy"),
    "instrument_env": ("portal", "pipeline", "workflows", *APP, "flask"),
    "workflows": ("portal", "instrument_env", *APP, "flask", "sqlalchemy"),
    "portal": ("workflows", "pipeline", *APP),
}


def _module_files() -> dict[str, Path]:
    modules = {}
    for part in PARTS:
        for path in (ROOT / part).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


MODULES = _module_files()


def _imports(name: str, path: Path) -> Iterator[str]:
    """Every module ``name`` imports, absolute; ``from pkg import submodule`` names the submodule."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                candidate = f"{module}.{alias.name}"
                yield candidate if candidate in MODULES else module


def _ours(module: str) -> str | None:
    while module and module not in MODULES:
        module = module.rpartition(".")[0]
    return module or None


GRAPH = {
    name: {dep for dep in (_ours(m) for m in _imports(name, path)) if dep and dep != name}
    for name, path in MODULES.items()
}
RAW = {name: set(_imports(name, path)) for name, path in MODULES.items()}


def _part(name: str) -> str:
    if name in CORE:
        return "core"
    if name.startswith(APP):
        return "app"
    return name.split(".")[0]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_the_checker_sees_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_among_product_modules():
    assert len(MODULES) > 100  # the walk found the parts
    assert _cycles(GRAPH) == []


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_each_part_imports_only_downwards(part):
    offences = sorted(
        f"{name} imports {module}"
        for name, imported in RAW.items()
        if _part(name) == part
        for module in imported
        if any(module == bad or module.startswith(bad + ".") for bad in FORBIDDEN[part])
    )
    assert offences == []


def test_no_test_skips_on_the_projects_own_modules():
    """A broken import of ours must fail, never pass as 'skipped' or leave checks out
    (importorskip is for optional third-party hardware libraries; a test that asks
    ``find_spec`` whether one of our modules exists runs less when it is missing)."""
    own = "|".join(PARTS)
    pattern = re.compile(rf"(importorskip|find_spec)\(\s*['\"]({own})\b")
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "tests").rglob("*.py")
        if pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
