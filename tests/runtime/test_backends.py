"""The engine table (runtime.backends.ENGINES): what it derives, that nothing else keeps a second list of
engines, and that reading it imports no engine."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.backends import (
    BACKENDS,
    BY_FORMAT,
    BY_NAME,
    CANDIDATES,
    CPU_FORMATS,
    ENGINE_FORMATS,
    ENGINES,
    NATIVE_BACKEND,
    OUTPUT_NAMES,
    RUNS,
)
from runtime.manifest import PRECISIONS, BundleError

ROOT = Path(__file__).resolve().parents[2]
# The four packages and the benchmarks, which export and measure every engine the table has.
SCANNED = ("runtime", "edge_anomaly", "exporters", "devices", "bench")
ENGINE_NAMES = set(BACKENDS) | set(ENGINE_FORMATS)
# The files outside runtime/backends that may spell an engine out (the target: at most two):
# the exporter's writers (each format's own toolkit), and the INT8 recipe's manifest field `onnxruntime`.
MAY_NAME_ENGINES = {"exporters/export.py", "exporters/recipes.py"}


def test_the_table_derives_what_was_written_by_hand_before():
    """The figures the five tables of runtime/backends, manifest.py and devices/profile.py held for the first
    three engines (a new row adds to them; it changes none of these)."""
    first = ("onnxruntime", "openvino", "tensorrt")
    assert BACKENDS[:3] == first and ENGINE_FORMATS[:3] == ("onnx", "openvino", "tensorrt")
    old = {fmt: tuple(name for name in CANDIDATES[fmt] if name in first) for fmt in ENGINE_FORMATS[:3]}
    assert old == {"onnx": ("onnxruntime", "openvino"), "openvino": ("openvino",),
                   "tensorrt": ("tensorrt", "onnxruntime", "openvino")}
    assert [NATIVE_BACKEND[fmt] for fmt in ENGINE_FORMATS[:3]] == list(first)
    assert {name: set(RUNS[name]) & set(ENGINE_FORMATS[:3]) for name in first} == {
        "onnxruntime": {"onnx", "tensorrt"}, "openvino": {"openvino", "onnx", "tensorrt"}, "tensorrt": {"tensorrt"}}
    assert OUTPUT_NAMES == ("heatmap", "score")
    assert CPU_FORMATS[:2] == ("onnx", "openvino") and "tensorrt" not in CPU_FORMATS
    assert {fmt: BY_FORMAT[fmt].bundle_files() for fmt in ENGINE_FORMATS[:3]} == {
        "onnx": {"model": "model.onnx"}, "openvino": {"model": "model.xml", "weights": "model.bin"},
        "tensorrt": {"model": "model.engine", "onnx": "model.onnx"}}


@pytest.mark.parametrize("spec", ENGINES, ids=lambda spec: spec.name)
def test_every_row_is_consistent_with_the_rest_of_the_code_base(spec):
    assert set(spec.precisions) <= set(PRECISIONS)
    assert spec.devices and spec.options == tuple(o for o in ("threads", "performance") if o in spec.options)
    assert f'\n{spec.extra} = ["{spec.package}' in (ROOT / "pyproject.toml").read_text()  # the extra installs it
    backend_class = getattr(importlib.import_module(spec.module), spec.class_name)  # the engine itself stays unloaded
    assert backend_class.name == spec.name
    assert BY_NAME[spec.name] is spec and BY_FORMAT[spec.format] is spec  # names and formats unique


def test_engine_files_take_the_roles_from_the_table(tmp_path):
    from runtime.backends import EngineFiles, choose_backend

    xml = EngineFiles.of_model(tmp_path / "model.xml", "openvino", (64, 64))
    assert xml.files == {"model": tmp_path / "model.xml", "weights": tmp_path / "model.bin"}
    engine = EngineFiles("tensorrt", {"model": tmp_path / "model.engine", "onnx": tmp_path / "model.onnx"}, (64, 64))
    assert engine.model_file("tensorrt") == tmp_path / "model.engine"
    assert engine.model_file("openvino") == engine.model_file("onnxruntime") == tmp_path / "model.onnx"
    with pytest.raises(BundleError, match="the tensorrt backend cannot run a onnx bundle"):
        EngineFiles.of_model(tmp_path / "model.onnx", "onnx", (64, 64)).model_file("tensorrt")
    with pytest.raises(BundleError, match=f"engine format 'nosuch' is not one of {', '.join(ENGINE_FORMATS)}"):
        choose_backend(EngineFiles.of_model(tmp_path / "m.nosuch", "nosuch", (64, 64)))


def test_the_manifest_and_the_profiles_accept_exactly_the_tables_names():
    from pydantic import ValidationError

    from devices.profile import Fallback
    from runtime.manifest import Engine

    for fmt in ENGINE_FORMATS:
        assert Engine(format=fmt, precision="fp32", files={"model": "m"}).format == fmt
    with pytest.raises(ValidationError, match="Input should be 'onnx', 'openvino'"):
        Engine(format="nosuch", precision="fp32", files={"model": "m"})
    assert [Fallback(backend=name).backend for name in BACKENDS] == list(BACKENDS)
    with pytest.raises(ValidationError):
        Fallback(backend="onnx")


def test_the_command_line_offers_the_tables_names():
    from edge_anomaly.cli import build_parser

    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    choices = {(name, action.dest): action.choices for name in ("predict", "bench", "export")
               for action in commands[name]._actions if action.dest in ("backend", "format")}
    assert choices == {("predict", "backend"): ("auto", *BACKENDS), ("bench", "backend"): ("auto", *BACKENDS),
                       ("export", "format"): ENGINE_FORMATS}


def test_reading_the_table_imports_no_engine_nor_numpy():
    code = ("import json, sys; import runtime.backends, runtime.manifest; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('numpy', 'onnxruntime', 'openvino', 'tensorrt') or m == 'runtime.backends.engine')))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == []


def engine_literals(path: Path) -> list[tuple[int, str]]:
    """(line, name) of every string constant in ``path`` that is exactly an engine or format name."""
    tree = ast.parse(path.read_text(), str(path))
    return sorted((node.lineno, node.value) for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in ENGINE_NAMES)


def engine_lists(path: Path) -> list[int]:
    """Lines of list, tuple, set or dict-key literals holding two or more engine names: a second table."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        items = node.keys if isinstance(node, ast.Dict) else node.elts if isinstance(
            node, ast.List | ast.Tuple | ast.Set) else []
        names = {item.value for item in items if isinstance(item, ast.Constant) and item.value in ENGINE_NAMES}
        if len(names) >= 2:
            found.append(node.lineno)
    return found


def outside_the_table() -> list[Path]:
    return sorted(path for folder in SCANNED for path in (ROOT / folder).rglob("*.py")
                  if not path.is_relative_to(ROOT / "runtime" / "backends"))


def test_no_second_list_of_engines_and_at_most_two_files_name_one():
    files = outside_the_table()
    assert len(files) > 50 and ROOT / "bench" / "export.py" in files  # the real tree
    lists = {str(path.relative_to(ROOT)): lines for path in files if (lines := engine_lists(path))}
    assert lists == {}, "derive engine lists from runtime.backends.ENGINES"
    naming = {str(path.relative_to(ROOT)): engine_literals(path) for path in files}
    naming = {name: found for name, found in naming.items() if found}
    assert set(naming) <= MAY_NAME_ENGINES, {name: found for name, found in naming.items()
                                              if name not in MAY_NAME_ENGINES}
    assert len(MAY_NAME_ENGINES) <= 2


def test_the_scan_finds_a_second_list(tmp_path):
    source = tmp_path / "choices.py"
    source.write_text('CHOICES = ["auto", "onnxruntime", "openvino"]\nDEFAULT = "onnx"\n')
    assert engine_lists(source) == [1]
    assert engine_literals(source) == [(1, "onnxruntime"), (1, "openvino"), (2, "onnx")]


def test_every_cpu_format_has_a_profiler_and_one_without_stops_the_benchmark():
    pytest.importorskip("onnx")
    from bench.parts import PROFILERS, check_profilers  # importing it checks the real table

    assert {NATIVE_BACKEND[fmt] for fmt in CPU_FORMATS} <= set(PROFILERS) <= set(BACKENDS)
    for fmt in CPU_FORMATS:
        backend = NATIVE_BACKEND[fmt]
        without = {name: profile for name, profile in PROFILERS.items() if name != backend}
        with pytest.raises(RuntimeError, match=rf"^bench/parts\.py has no profiler for the backend of {backend} "
                           rf"\(format {fmt}\): add one to PROFILERS$"):
            check_profilers(without)
