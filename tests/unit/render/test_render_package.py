"""Render is presentation only: it imports ``certreconcile.plan`` and the standard library, nothing else."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from certreconcile import render

RENDER_DIR = Path(render.__file__).parent


def test_render_imports_only_plan_and_stdlib() -> None:
    offenders = []
    for source in sorted(RENDER_DIR.glob("*.py")):
        tree = ast.parse(source.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: inside render
                    continue
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                allowed = module == "certreconcile.plan" or module.startswith("certreconcile.plan.")
                if not allowed and (top == "certreconcile" or top not in sys.stdlib_module_names):
                    offenders.append(f"{source.name}: {module}")
    assert offenders == []


def test_exports() -> None:
    public = {name for name in vars(render) if not name.startswith("_")} - {
        "annotations",
        "comment",
        "json",
        "markdown",
        "text",
    }
    assert set(render.__all__) == public
