"""The one-way layering of the project, checked on the source (so it stays true).

core/ has four layers: the library (core/*.py and core/refer/), the evaluations
(core/evaluate/), the benchmarks (core/bench/) and the command line (core/cli/, __main__).
Imports run one way: the library imports none of the others and never gradio; evaluations
and benchmarks import the library only; demo/ imports no model library, and its UI modules
never import the tools that drive the app from outside (demo/tools/: browser benchmark,
load test). Nothing under core/ or demo/ imports test code. Project modules are imported at
module top (explicit, visible in the import graph), never by string.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODEL_LIBRARIES = ("torch", "torchvision", "faiss", "spacy", "open_clip", "segment_anything")


def _layer(path: Path) -> str:
    parts = path.relative_to(ROOT).parts
    if parts[0] == "demo":
        return "tools" if len(parts) > 2 and parts[1] == "tools" else "demo"
    if parts[0] == "app.py":
        return "app"
    if len(parts) > 2 and parts[1] in ("cli", "evaluate", "bench"):
        return parts[1]
    if parts[-1] == "__main__.py":
        return "cli"
    return "library"


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module imported, at module top?) for every import statement of a file."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            found += [(name, id(node) in top) for name in names]
    return found


def _layer_of_module(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] == "demo":
        return "tools" if len(parts) > 1 and parts[1] == "tools" else "demo"
    if parts[0] in ("tests", "fakes", "conftest"):
        return "tests"
    if parts[0] != "core":
        return None
    if len(parts) > 1 and parts[1] in ("cli", "evaluate", "bench"):
        return parts[1]
    if len(parts) > 1 and parts[1] == "__main__":
        return "cli"
    return "library"


SOURCES = sorted([*ROOT.glob("core/**/*.py"), *ROOT.glob("demo/**/*.py"), ROOT / "app.py"])
ALLOWED = {
    "library": {"library"},
    "evaluate": {"library", "evaluate"},
    "bench": {"library", "bench"},
    "cli": {"library", "evaluate", "bench", "cli"},
    "demo": {"library", "demo"},
    "tools": {"library", "demo", "tools", "bench"},
    "app": {"library", "cli", "demo"},
}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_run_one_way(path):
    layer = _layer(path)
    for name, _ in _imports(path):
        target = _layer_of_module(name)
        if target is not None:
            assert target in ALLOWED[layer], f"{path.relative_to(ROOT)} ({layer}) imports {name} ({target})"
        if layer in ("library", "evaluate", "bench", "cli"):
            assert name.split(".")[0] != "gradio", f"{path.relative_to(ROOT)} imports gradio"
        if layer in ("demo", "tools"):
            assert name.split(".")[0] not in MODEL_LIBRARIES, f"{path.relative_to(ROOT)} imports {name}"


#: Project modules that are torch code through and through: only the model loader and the
#: registry of SAM variants (its builders) import them, inside functions, so that importing
#: the engine (and starting the app) stays light.
LOADERS = ("core/models.py", "core/sam/variants.py")
HEAVY_PROJECT_MODULES = ("core.sam.fast_sam", "core.sam.tinyvit", "core.sam.fast_tinyvit", "core.sam.fast_vit",
                         "core.sam.probes")


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_project_modules_are_imported_at_the_top(path):
    inside = [name for name, top in _imports(path) if not top and name.split(".")[0] in ("core", "demo")
              and not (path.relative_to(ROOT).as_posix() in LOADERS and name.startswith(HEAVY_PROJECT_MODULES))]
    assert not inside, f"{path.relative_to(ROOT)} imports project modules inside functions: {inside}"
    by_string = re.findall(r"import_module\(\s*[\"'](?:core|demo)\b", path.read_text())
    assert not by_string, f"{path.relative_to(ROOT)} imports project modules by string"


def test_the_checker_sees_a_violation(tmp_path):
    """The rule can fail: a library module importing the command line is caught."""
    bad = ROOT / "core" / "_layer_probe.py"
    assert _layer(bad) == "library" and _layer_of_module("core.cli.args") == "cli"
    assert "cli" not in ALLOWED["library"] and "bench" not in ALLOWED["evaluate"]
    assert _layer(ROOT / "demo" / "shell.py") == "demo" and _layer_of_module("demo.tools.loadtest") == "tools"
    assert "tools" not in ALLOWED["demo"] and "tests" not in ALLOWED["bench"]
    probe = tmp_path / "probe.py"
    probe.write_text("import os\nfrom core.cli.main import main\n\ndef f():\n    from core.views import render_view\n")
    assert _imports(probe) == [("os", True), ("core.cli.main.main", True), ("core.views.render_view", False)]
    assert _layer_of_module("core.cli.main") not in ALLOWED["library"]
