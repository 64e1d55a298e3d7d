"""The reconstruction modules import downwards only: no import cycles, counting imports
inside functions too (helpers such as ``fourier`` and ``grids`` at the bottom, stages on
top)."""

import ast
from pathlib import Path

import pipeline.reconstruction as package

PACKAGE = "pipeline.reconstruction"


def _imports(path: Path) -> set[str]:
    """Modules of the package that ``path`` imports anywhere (module or function level)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == PACKAGE:
                found |= {alias.name for alias in node.names}
            elif node.module.startswith(PACKAGE + "."):
                found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(PACKAGE + "."):
                    found.add(alias.name.split(".")[2])
    return found


def _graph() -> dict[str, set[str]]:
    root = Path(package.__file__).parent
    modules = {p.stem for p in root.glob("*.py") if p.stem != "__init__"}
    return {m: _imports(root / f"{m}.py") & modules - {m} for m in modules}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles_in_reconstruction():
    cycle = _cycle(_graph())
    assert cycle is None, " → ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_helpers_are_at_the_bottom():
    graph = _graph()
    assert graph["fourier"] == set() and graph["grids"] == set()
    for stage in ("refine", "abinitio", "class2d"):
        assert "run" not in graph[stage]
