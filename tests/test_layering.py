"""The layers stay apart: the HTTP side never imports torch, the engine never imports Flask, and
no module imports back up, not even inside a function (a circle Python tolerates and linters do
not see). Read from the source (ast), so it runs in a blink; the runtime checks below confirm
what a real import pulls in."""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
PACKAGE = "whisper_api"
HTTP_MODULES = [
    "whisper_api.routes", "whisper_api.auth", "whisper_api.app_state", "whisper_api.request_form",
    "whisper_api.formats", "whisper_api.streaming", "whisper_api.jobs", "whisper_api.metrics",
    "whisper_api.access_log", "whisper_api.errors", "whisper_api.page", "whisper_api.server",
]
ENGINE_MODULES = ["whisper_api.engine", "whisper_api.transcript", "whisper_api.model_queue"]

Graph = dict[str, list[tuple[str, bool]]]  # module -> [(imported name, at module level)]


def module_names(root: Path, package: str) -> dict[str, Path]:
    names = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(name: str, path: Path, modules: set[str]) -> list[tuple[str, bool]]:
    """What `name` imports at run time: (module, whether at module level); TYPE_CHECKING blocks
    import nothing at run time and are left out."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, module_level: bool) -> None:
        if isinstance(node, ast.If) and is_type_checking(node):
            for child in node.orelse:
                visit(child, module_level)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, module_level) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.append((submodule if submodule in modules else base, module_level))
        inner = module_level and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8")), True)
    return found


@functools.lru_cache(maxsize=None)
def import_graph(root: Path = REPOSITORY, package: str = PACKAGE) -> Graph:
    names = module_names(root, package)
    return {name: imports_of(name, path, set(names)) for name, path in names.items()}


def circles(graph: Graph) -> list[list[str]]:
    """Every import circle among the package's modules, function-level imports included."""
    edges = {module: sorted({target for target, _ in targets if target in graph and target != module})
             for module, targets in graph.items()}
    found, state = [], {}

    def walk(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in edges[module]:
            if state.get(target) == "open":
                found.append(path[path.index(target):] + [target])
            elif target not in state:
                walk(target, path + [target])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            walk(module, [module])
    return found


def loaded_by(graph: Graph, start: str) -> set[str]:
    """Top-level names of everything importing `start` loads: its module-level imports, and the
    packages above each module it reaches."""
    seen, pending, external = set(), [start], set()
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        pending += [".".join(parts[:length]) for length in range(1, len(parts)) if ".".join(parts[:length]) in graph]
        for target, module_level in graph.get(module, []):
            if not module_level:
                continue
            if target in graph:
                pending.append(target)
            elif not target.startswith(PACKAGE + "."):
                external.add(target.split(".")[0])
    return external


def test_no_module_imports_back_up_not_even_inside_a_function():
    assert circles(import_graph()) == []


def test_a_circle_hidden_inside_a_function_is_found(tmp_path):
    package = tmp_path / "layered"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "routes.py").write_text("from .auth import authenticate\n")
    (package / "auth.py").write_text("def authenticate():\n    from .routes import settings\n")
    (package / "typed.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .routes import x\n")
    assert circles(import_graph(tmp_path, "layered")) == [["layered.auth", "layered.routes", "layered.auth"]]


@pytest.mark.parametrize("module", HTTP_MODULES)
def test_http_side_does_not_import_torch(module):
    assert "torch" not in loaded_by(import_graph(), module)


@pytest.mark.parametrize("module", ENGINE_MODULES + sorted(
    name for name in import_graph() if name.startswith("whisper_api.inference")))
def test_engine_side_does_not_import_flask(module):
    assert not {"flask", "werkzeug", "waitress"} & loaded_by(import_graph(), module)


def test_speech_detection_imports_neither_torch_nor_flask_nor_silero_vad():
    """silero_vad's import sets torch to one thread; the model file is read without it."""
    for module in ("whisper_api.inference.vad", "whisper_api.inference.chunks"):
        assert not {"torch", "flask", "silero_vad"} & loaded_by(import_graph(), module)


def imported_after(module: str) -> set[str]:
    code = f"import sys, {module}; print(' '.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPOSITORY, capture_output=True, text=True, check=True)
    return {name.split(".")[0] for name in result.stdout.split()}


@pytest.mark.model  # a child process that imports the real stack
def test_routes_really_do_not_import_torch():
    assert "torch" not in imported_after("whisper_api.routes")


@pytest.mark.model
def test_engine_really_does_not_import_flask():
    assert "flask" not in imported_after("whisper_api.engine")
