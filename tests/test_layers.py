"""The layer rules of ARCHITECTURE.md, checked on every import the source makes, lazy ones included.

runtime imports nothing of the other three packages (nor torch); devices imports only runtime;
exporters imports runtime and edge_anomaly; edge_anomaly imports runtime. Every ``import``
statement counts (module level, in functions, under ``TYPE_CHECKING``), and so does every
``importlib.import_module``/``__import__`` call with a literal name. Module-level imports between
the project's own modules form no cycle.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {
    "runtime": {"runtime"},
    "devices": {"devices", "runtime"},
    "exporters": {"exporters", "runtime", "edge_anomaly"},
    "edge_anomaly": {"edge_anomaly", "runtime"},
}
PACKAGES = tuple(ALLOWED)
FORBIDDEN_LIBRARIES = {"runtime": {"torch"}, "devices": {"torch"}}  # what an edge box does not install


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_files() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - node.level + 1]
    return ".".join([*base, *([node.module] if node.module else [])])


def _literal_import_call(node: ast.Call) -> str | None:
    """The module named by ``importlib.import_module("x")``, ``import_module("x")`` or ``__import__("x")``."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant) \
            and isinstance(node.args[0].value, str):
        return node.args[0].value
    return None


class _Imports(ast.NodeVisitor):
    """(line, imported module, names imported from it, at module level) for every import in one file."""

    def __init__(self, module: str, is_package: bool) -> None:
        self.module, self.is_package = module, is_package
        self.found: list[tuple[int, str, tuple[str, ...], bool]] = []
        self._depth = 0  # > 0 inside a function or a TYPE_CHECKING block

    def _nested(self, node: ast.AST) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = _nested

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
                (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
            self._nested(node)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append((node.lineno, alias.name, (), self._depth == 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        target = _resolve(node, self.module, self.is_package)
        self.found.append((node.lineno, target, tuple(alias.name for alias in node.names), self._depth == 0))

    def visit_Call(self, node: ast.Call) -> None:
        target = _literal_import_call(node)
        if target is not None:
            self.found.append((node.lineno, target, (), False))
        self.generic_visit(node)


def imports_of(path: Path) -> list[tuple[int, str, tuple[str, ...], bool]]:
    visitor = _Imports(module_name(path), path.name == "__init__.py")
    visitor.visit(ast.parse(path.read_text(), str(path)))
    return visitor.found


def layer_violations(files: list[Path]) -> list[str]:
    problems = []
    for path in files:
        layer = module_name(path).split(".")[0]
        for line, target, _, _ in imports_of(path):
            top = target.split(".")[0]
            upward = top in PACKAGES and top not in ALLOWED[layer]
            if upward or top in FORBIDDEN_LIBRARIES.get(layer, ()):
                problems.append(f"{path.relative_to(ROOT)}:{line}: {layer} imports {target}")
    return problems


def import_graph(files: list[Path]) -> dict[str, set[str]]:
    """Module -> the project modules it imports at module level (``from a import b``: a.b where b is a module)."""
    modules = {module_name(path) for path in files}
    graph: dict[str, set[str]] = {}
    for path in files:
        edges = graph.setdefault(module_name(path), set())
        for _, target, names, module_level in imports_of(path):
            if not module_level or target.split(".")[0] not in PACKAGES:
                continue
            submodules = {f"{target}.{name}" for name in names} & modules
            edges.update(submodules or ({target} & modules))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module, or a module importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_goes_up_a_layer_lazy_ones_included():
    files = source_files()
    assert len(files) > 100  # the scan reads the real tree
    assert layer_violations(files) == []


def test_no_module_level_import_cycle():
    assert cycles(import_graph(source_files())) == []


def test_the_scan_sees_lazy_string_and_type_only_imports(tmp_path, monkeypatch):
    """The checker itself: each kind of upward import in a runtime module is reported, a downward one is not."""
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    package = tmp_path / "runtime"
    package.mkdir()
    (package / "__init__.py").write_text("")
    bad = package / "bad.py"
    bad.write_text("from typing import TYPE_CHECKING\nimport runtime.cpu\nfrom . import cpu\n"
                   "if TYPE_CHECKING:\n    from devices import profile\n"
                   "def f():\n    import importlib\n    import exporters.export\n"
                   "    importlib.import_module('edge_anomaly.cli')\n    __import__('torch')\n")
    assert layer_violations([bad]) == [
        "runtime/bad.py:5: runtime imports devices", "runtime/bad.py:8: runtime imports exporters.export",
        "runtime/bad.py:9: runtime imports edge_anomaly.cli", "runtime/bad.py:10: runtime imports torch"]
    (package / "a.py").write_text("from runtime import b\n")
    (package / "b.py").write_text("import runtime.a\ndef lazy():\n    from runtime import bad\n")
    graph = import_graph([package / "a.py", package / "b.py", bad])
    assert graph["runtime.a"] == {"runtime.b"} and graph["runtime.b"] == {"runtime.a"}
    assert cycles(graph) == [["runtime.a", "runtime.b"]]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_is_scanned(package):
    assert any(module_name(path).startswith(f"{package}.") for path in source_files())


def test_the_entry_point_seams_are_installed_as_declared():
    """pyproject.toml's seams (runtime/entry_points.py) are in the installed metadata and load; a stale
    editable install fails here, naming the reinstall, rather than as missing subcommands."""
    tomllib = pytest.importorskip("tomllib")
    from importlib import metadata

    from runtime.entry_points import COMMANDS, DEVICE_PROFILES, load_device_profile

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    assert set(declared) == {COMMANDS, DEVICE_PROFILES}
    for group, entries in declared.items():
        installed = {entry.name: entry.value for entry in metadata.entry_points(group=group)}
        assert installed == entries, f"reinstall for the entry points of {group}: pip install --no-deps -e ."
    assert load_device_profile("intel-core-cpu").runtime.backend == "openvino"
    with pytest.raises(ValueError, match="unknown device profile 'no-such-board'"):
        load_device_profile("no-such-board")
