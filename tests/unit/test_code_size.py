"""The size rules (issue 11): no file in ``src/`` over 500 lines unless declarative, no function over 60.

A file that grows past the limit is split into a new module by concern; a function, into steps.
Ruff's complexity rules (PLR0911/0912/0915) cover branches and statements; this covers length.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "certreconcile"
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 60

#: Files allowed over the limit, with the reason. Declarative files are tables, not logic.
LONG_FILES = {
    "error_codes.py": "declarative: the registry of every error code with its hint and exit code",
}


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int, int]]:
    """(name, first line, length) of each function longer than ``limit`` lines, ``def`` to last line."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > limit:
                found.append((node.name, node.lineno, length))
    return found


def _sources() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_the_rule_sees_a_long_function() -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    assert long_functions(f"def short():\n    return 1\n\ndef long():\n{body}") == [("long", 4, MAX_FUNCTION_LINES + 1)]
    method_body = "".join(f"        x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    assert long_functions(f"class C:\n    def method(self):\n{method_body}") == [("method", 2, MAX_FUNCTION_LINES + 1)]


def test_no_source_file_is_over_the_limit() -> None:
    assert _sources(), SRC
    too_long = {
        path.relative_to(SRC).as_posix(): lines
        for path in _sources()
        if (lines := len(path.read_text().splitlines())) > MAX_FILE_LINES
    }
    unexpected = {name: lines for name, lines in too_long.items() if name not in LONG_FILES}
    assert not unexpected, f"over {MAX_FILE_LINES} lines, split them by concern: {unexpected}"
    stale = sorted(set(LONG_FILES) - set(too_long))
    assert not stale, f"no longer over the limit (or gone): remove them from LONG_FILES: {stale}"


def test_no_function_is_over_the_limit() -> None:
    found = {
        f"{path.relative_to(SRC).as_posix()}:{line} {name}": length
        for path in _sources()
        for name, line, length in long_functions(path.read_text())
    }
    assert not found, f"functions over {MAX_FUNCTION_LINES} lines, split them into steps: {found}"
