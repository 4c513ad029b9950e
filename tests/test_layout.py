"""The package's structure: dependencies point one way, and each module stays small enough to read.

The import graph is read from the source (every `import`, also those inside
functions), so a cycle hidden in a function body is found too.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "charlm"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str) -> set[str]:
    """The charlm modules that module `name` imports (a `from charlm.x import y` of a submodule y counts as x.y)."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: imports_of(name) for name in MODULES}


def test_the_graph_is_read():
    assert "charlm.model" in GRAPH["charlm.train"] or "charlm.model" in GRAPH["charlm.run"]
    assert "charlm.cli.app" in GRAPH["charlm.cli.train"]


def test_there_is_no_import_cycle():
    """Depth-first search for a back edge; a package importing its own submodules (its face) does not count."""
    def edges(name):
        return {m for m in GRAPH[name] if not (MODULES[name].name == "__init__.py" and m.startswith(name + "."))}

    state: dict[str, int] = {}
    path: list[str] = []

    def visit(name):
        state[name] = 1
        path.append(name)
        for m in sorted(edges(name)):
            if state.get(m) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(m):] + [m]))
            if m not in state:
                visit(m)
        path.pop()
        state[name] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name)


def test_a_planted_cycle_is_found(monkeypatch):
    """Negative control: the search above does report a cycle when there is one."""
    monkeypatch.setitem(GRAPH, "charlm.model", GRAPH["charlm.model"] | {"charlm.train"})
    with pytest.raises(pytest.fail.Exception, match="import cycle"):
        test_there_is_no_import_cycle()


def test_the_library_never_imports_the_cli():
    offenders = {name: sorted(m for m in deps if m == "charlm.cli" or m.startswith("charlm.cli."))
                 for name, deps in GRAPH.items() if not name.startswith("charlm.cli") and name != "charlm.__main__"}
    assert not {k: v for k, v in offenders.items() if v}


def test_the_workers_import_only_what_lies_below_them():
    jobs = {"charlm.train", "charlm.score", "charlm.sample", "charlm.run", "charlm.validation", "charlm.bench"}
    for name, deps in GRAPH.items():
        if name.startswith("charlm.workers"):
            assert not deps & jobs, (name, deps & jobs)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_over_400_lines(name):
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{MODULES[name].relative_to(PACKAGE.parent)} has {lines} lines"
