"""Code-size figures of a checkout: the longest functions, the largest classes, modules per folder.

    python -m core.bench.code_stats [CHECKOUT]     (default: this repository)

An ast walk over core/, demo/ and app.py; used for the before/after table in
docs/architecture.md (run it on two checkouts, e.g. one made with `git worktree add`).
"""
from __future__ import annotations

import ast
import collections
import sys
from pathlib import Path


def code_stats(root: Path) -> dict:
    """{"functions": [(lines, "path:name")...] longest first, "classes": [(methods, ...)...],
    "modules_per_folder": {folder: count}}."""
    funcs, classes, per_folder = [], [], collections.Counter()
    paths = sorted([*root.glob("core/**/*.py"), *root.glob("demo/**/*.py"), root / "app.py"])
    for path in paths:
        rel = path.relative_to(root)
        per_folder[str(rel.parent)] += 1
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                funcs.append((node.end_lineno - node.lineno + 1, f"{rel}:{node.name}"))
            elif isinstance(node, ast.ClassDef):
                methods = sum(isinstance(b, (ast.FunctionDef, ast.AsyncFunctionDef)) for b in node.body)
                classes.append((methods, f"{rel}:{node.name}"))
    return {"functions": sorted(funcs, reverse=True), "classes": sorted(classes, reverse=True),
            "modules_per_folder": dict(sorted(per_folder.items()))}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    stats = code_stats(Path(argv[0] if argv else Path(__file__).resolve().parents[2]).resolve())
    print("10 longest functions (lines):")
    for n, name in stats["functions"][:10]:
        print(f"  {n:4d} {name}")
    print("5 largest classes (methods):")
    for n, name in stats["classes"][:5]:
        print(f"  {n:4d} {name}")
    print("modules per folder:", stats["modules_per_folder"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
