"""The package's import graph, read from the source with ``ast`` (nothing is imported).

Every ``import`` counts: module level, inside functions (lazy) and under ``TYPE_CHECKING``.
Package ``__init__`` files are facades that re-export the package (``import roleprobe as
rp``) and sit above everything, so they are not followed as sources of edges.
"""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "roleprobe"

RUNS_A_MODEL = {
    "activations",
    "attribution",
    "components",
    "conformance",
    "confusion",
    "directions",
    "embedded",
    "evaluation",
    "generation",
    "models",
    "picks",
    "prefix",
    "readouts",
    "sweeps",
    "tiny",
    "validation",
}
"""Modules that load a model or run forward passes (matched by their last name part)."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: Path, known: set[str], runtime_only: bool = False) -> set[str]:
    """The package modules ``name`` imports (``runtime_only``: not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(), str(path))
    skipped: set[int] = set()
    if runtime_only:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and _is_type_checking(node):
                skipped |= {id(n) for child in node.body for n in ast.walk(child)}
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from pkg import mod` imports a module; `from mod import name` the module
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import roleprobe.x.y` -> roleprobe.x
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {
        name: set() if path.name == "__init__.py" else _imports(name, path, known)
        for name, path in modules.items()
    }


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (as a path that returns to its start), or ``None``."""
    state: dict[str, int] = {}  # 1: on the stack, 2: finished
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _named(last: str) -> str:
    """The full name of the package module whose last part is ``last``."""
    return next(n for n in _modules() if n.rsplit(".", 1)[-1] == last)


def test_the_graph_reader_sees_lazy_and_type_checking_imports():
    graph = _graph()
    pipeline = graph[_named("pipeline")]
    assert _named("run") in pipeline  # module level
    assert _named("sweeps") in pipeline  # inside a stage function
    assert _named("types") in pipeline  # under TYPE_CHECKING
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a"}}) is None


def test_the_package_has_no_import_cycle():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("module", ["report", "run", "run_config", "io", "store"])
def test_the_run_folder_and_the_report_import_nothing_that_runs_a_model(module):
    modules = _modules()
    name = next(n for n in modules if n.rsplit(".", 1)[-1] == module)
    imported = _imports(name, modules[name], set(modules), runtime_only=True)
    bad = sorted(m for m in imported if m.rsplit(".", 1)[-1] in RUNS_A_MODEL)
    assert not bad, f"{name} imports {bad}, which run a model"


def test_io_is_the_bottom_layer():
    modules = _modules()
    name = next(n for n in modules if n.rsplit(".", 1)[-1] == "io")
    assert _imports(name, modules[name], set(modules)) == set()


STRATA = ("core", "model", "data", "steering", "vectors", "results", "experiments", "app")
"""The subpackages from the bottom up; a module imports only from its own stratum or below
(README, "Layout")."""


def test_every_module_lives_in_a_stratum():
    facades = (PACKAGE, f"{PACKAGE}.__main__")
    loose = [n for n in _modules() if n not in facades and n.split(".")[1] not in STRATA]
    assert not loose, f"modules outside the strata: {loose}"


def _stratum(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) >= 3 and parts[1] in STRATA else None


def _upward(graph: dict[str, set[str]]) -> list[str]:
    """Edges from a module to a module of a higher stratum."""
    rank = {stratum: i for i, stratum in enumerate(STRATA)}
    out = []
    for name, targets in graph.items():
        own = _stratum(name)
        for target in targets:
            other = _stratum(target)
            if own and other and rank[other] > rank[own]:
                out.append(f"{name} -> {target}")
    return out


def test_no_module_imports_from_a_stratum_above_it():
    upward = _upward(_graph())
    assert not upward, "imports from a stratum above: " + ", ".join(upward)


def test_the_strata_check_can_fail():
    assert _upward({"roleprobe.model.chat": {"roleprobe.app.cli"}}) == [
        "roleprobe.model.chat -> roleprobe.app.cli"
    ]
    assert _upward({"roleprobe.app.cli": {"roleprobe.model.chat", "roleprobe"}}) == []
