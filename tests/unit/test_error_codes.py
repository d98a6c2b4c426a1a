"""The error-code registry is complete and exact, and the README's table is generated from it.

``tests/error_code_scan.py`` reads every code written in ``src/`` (keyword ``code=``, positional codes of
``YamlProblem``/``Diagnostic``/``PlanDiagnostic``/helpers, code tables and constants). A code raised but
not registered fails here, and so does a code registered but raised nowhere.
"""

from __future__ import annotations

import functools
import re
import textwrap
from pathlib import Path

import pytest

from certreconcile import error_codes
from certreconcile.error_codes import REGISTRY, Category, markdown_table, replace_readme_section
from certreconcile.errors import CHECK_CODES_ENV, CertReconcileError, TargetError, UnregisteredCodeError
from error_code_scan import scan

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "certreconcile"
KEBAB = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
REGISTRY_FILE = "error_codes.py"


@functools.cache
def _found_in_sources() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for item in scan(PACKAGE):
        assert item.code is not None, f"{item.where}: the code {item.text} is not a literal; write codes as literals"
        if not item.where.startswith(REGISTRY_FILE):
            found.setdefault(item.code, []).append(item.where)
    return found


def test_every_code_raised_is_registered() -> None:
    missing = {code: where for code, where in _found_in_sources().items() if code not in REGISTRY}
    assert not missing, (
        f"codes raised but not in src/certreconcile/error_codes.py: {missing}; register each with its category and"
        " hint, then run `PYTHONPATH=src python -m certreconcile.error_codes --write README.md`"
    )


def test_every_registered_code_is_raised_somewhere() -> None:
    unused = sorted(set(REGISTRY) - set(_found_in_sources()))
    assert not unused, f"registered but raised nowhere in src (remove them from error_codes.py): {unused}"


def test_registry_entries_are_well_formed() -> None:
    assert len(REGISTRY) == len(error_codes._CODES), "a code is registered twice"
    for entry in REGISTRY.values():
        assert KEBAB.match(entry.code), entry.code
        assert entry.hint.strip() and not entry.hint.endswith("."), entry.code
        assert entry.exit_code == 1, entry.code  # design §6: every error exits 1 (2 means "changes")
        assert isinstance(entry.category, Category)


def test_the_readme_table_is_generated_from_the_registry() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert replace_readme_section(readme) == readme, (
        "README.md's error-code table is stale: PYTHONPATH=src python -m certreconcile.error_codes --write README.md"
    )
    assert markdown_table().count("\n") == len(REGISTRY) + 2


def test_the_scanner_reads_every_shape_a_code_is_written_in(tmp_path: Path) -> None:
    """A new code in any of these shapes is found, so adding one without registering it fails above."""
    (tmp_path / "shapes.py").write_text(
        textwrap.dedent(
            """
            from dataclasses import dataclass

            CODE_X = "c-constant"
            UNSAFE = "c-module-name"
            _TABLE = {"WORD": ("c-table", "a hint")}

            @dataclass
            class Problem:
                code: str
                message: str

            class Other:
                def __init__(self, code: str, message: str) -> None: ...

            def helper(message: str, code: str, hint: str = "") -> None: ...

            def with_default(code: str = "c-default") -> None: ...

            def raising(flag: bool, word: str, exc: Exception, name: str) -> None:
                Error("m", code="c-keyword")
                Error("m", code="c-then" if flag else "c-else")
                Error("m", code=UNSAFE)
                Problem("c-positional", "m")
                Other("c-init", "m")
                helper("m", "c-helper")
                code, hint = "c-pair", "h"
                code, hint = _TABLE.get(word, ("c-fallback", "h"))
                Error("m", code=exc.code)
                Error("m", code=f"c-{name}")
            """
        ),
        encoding="utf-8",
    )
    found = scan(tmp_path)
    codes = {item.code for item in found if item.code is not None}
    assert codes == {
        "c-constant", "c-module-name", "c-table", "c-default", "c-keyword", "c-then", "c-else",
        "c-positional", "c-init", "c-helper", "c-pair", "c-fallback",
    }  # fmt: skip
    assert [item.text for item in found if item.code is None] == ["f'c-{name}'"]


def test_an_unregistered_code_fails_at_once_when_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CHECK_CODES_ENV, "1")
    with pytest.raises(UnregisteredCodeError, match="no-such-code"):
        TargetError("boom", code="no-such-code")
    assert TargetError("boom", code="target-reload-failed").code == "target-reload-failed"
    assert CertReconcileError("boom").code == "certreconcile-error"  # default codes are registered too
    monkeypatch.setenv(CHECK_CODES_ENV, "0")
    assert TargetError("boom", code="no-such-code").code == "no-such-code"  # a third-party plug-in's code
