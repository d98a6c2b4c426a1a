"""Find every error code written in ``src/``: the registry test (tests/unit/test_error_codes.py) uses it.

Codes reach errors in a few shapes; each is read here from the syntax tree, never by running code:

* ``code="..."`` keyword arguments (any call: ``KmsError(..., code=...)``, ``problem_error(..., code=...)``),
  the branches of a conditional (``"a" if x else "b"``) included;
* a positional argument in the place of a parameter or field named ``code`` of a function, method,
  dataclass or exception defined in the same module, or of a class defined anywhere in ``src``
  (``YamlProblem("yaml-syntax", ...)``, ``Diagnostic(location, code, ...)``, ``issues.add(ref, code, ...)``);
* the default of a parameter named ``code`` (``def problem_error(..., code="acme-error")``);
* assignments to a name spelled like a code (``code``, ``CODE_X``, ``_CODE``, ``X_CODES``, ``default_code``):
  constants, conditionals, the first item of tuples in a table (``{"NOT_FOUND": ("kms-key-not-found", hint)}``)
  and members of a set; ``code, hint = "a", "b"`` and ``code, hint = TABLE.get(word, ("a", "b"))`` too.

A code built at run time (an f-string, a call) is reported as unreadable: write codes as literals.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Found", "scan"]

_CODE_NAME = re.compile(r"^(?:code|default_code|_?CODE(?:_[A-Z0-9_]+)?|_?[A-Z0-9_]+_CODES?)$")
# Parameters named `code` that are no error code (an ANSI colour in the text renderer).
_NOT_ERROR_CODES = {("render/text.py", "_wrap")}


@dataclass(frozen=True, slots=True)
class Found:
    code: str | None  # None: a code expression the scanner cannot read
    where: str  # path relative to the package, and line
    text: str  # the expression, for messages


def _constants(node: ast.expr) -> list[str] | None:
    """The strings ``node`` can be; None when it is not made of string literals only."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):  # each branch a literal, or a code passed on (``exc.code if ... else "x"``)
        branches = [_constants(branch) if not _readable(branch) else [] for branch in (node.body, node.orelse)]
        return None if None in branches else [code for branch in branches for code in branch or ()]
    return None


def _is_str(annotation: ast.expr | None) -> bool:
    """``code: str`` (an error code); ``code: ReasonCode`` and friends are other kinds of code."""
    return annotation is None or ast.unparse(annotation) in ("str", "str | None")


def _code_index(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int | None:
    arguments = [*node.args.posonlyargs, *node.args.args]
    names = [a.arg for a in arguments]
    if "code" not in names or not _is_str(arguments[names.index("code")].annotation):
        return None
    index = names.index("code")
    return index - 1 if names and names[0] in ("self", "cls") else index


def _class_code_index(node: ast.ClassDef) -> int | None:
    for item in node.body:
        if isinstance(item, ast.FunctionDef) and item.name == "__init__":
            return _code_index(item)
    fields = [s for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)]
    names = [field.target.id for field in fields if isinstance(field.target, ast.Name)]
    if "code" not in names or not _is_str(fields[names.index("code")].annotation):
        return None
    return names.index("code")


def _callables(tree: ast.Module, relative: str) -> tuple[dict[str, int], dict[str, int]]:
    """(functions and methods of this module, classes) with the position of their ``code`` parameter."""
    functions: dict[str, int] = {}
    classes: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            index = _class_code_index(node)
            if index is not None:
                classes[node.name] = index
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name != "__init__":
            index = _code_index(node)
            if index is not None and (relative, node.name) not in _NOT_ERROR_CODES:
                functions[node.name] = index
    return functions, classes


def _called_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def _table_codes(value: ast.expr, index: int) -> Iterator[ast.expr]:
    """Item ``index`` of every tuple in ``value`` (a table of (code, hint)), and the members of sets."""
    for sub in ast.walk(value):
        if isinstance(sub, ast.Tuple) and len(sub.elts) > index:
            yield sub.elts[index]
        elif isinstance(sub, ast.Set):
            yield from sub.elts


def _module_constants(tree: ast.Module) -> dict[str, str]:
    """Module-level ``NAME = "text"``: ``code=UNSAFE_PATH`` reads the constant."""
    constants: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            constants.update({t.id: node.value.value for t in node.targets if isinstance(t, ast.Name)})
    return constants


def _module_tables(tree: ast.Module) -> dict[str, ast.expr]:
    tables: dict[str, ast.expr] = {}
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(target, ast.Name) and isinstance(node.value, ast.Dict):
                    tables[target.id] = node.value
    return tables


def _assigned(node: ast.Assign | ast.AnnAssign, tables: dict[str, ast.expr]) -> Iterator[ast.expr]:
    """The code expressions an assignment gives a code-named variable."""
    assert node.value is not None
    for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
        if isinstance(target, ast.Name) and _CODE_NAME.match(target.id):
            if isinstance(node.value, (ast.Dict, ast.Set, ast.Call)):
                yield from _table_codes(node.value, 0)
            else:
                yield node.value
        elif isinstance(target, ast.Tuple):
            names = [e.id if isinstance(e, ast.Name) else "" for e in target.elts]
            if "code" not in names:
                continue
            index = names.index("code")
            value = node.value
            if isinstance(value, ast.Tuple):
                yield value.elts[index]
                continue
            yield from _table_codes(value, index)  # TABLE.get(word, ("default", "hint"))
            for sub in ast.walk(value):
                if isinstance(sub, ast.Name) and sub.id in tables:
                    yield from _table_codes(tables[sub.id], index)


def _module_codes(
    tree: ast.Module, relative: str, functions: dict[str, int], classes: dict[str, int]
) -> Iterator[tuple[ast.expr, int]]:
    tables = _module_tables(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg == "code":
                    yield keyword.value, node.lineno
            name = _called_name(node)
            index = functions.get(name or "", classes.get(name or ""))
            if index is not None and index < len(node.args) and not isinstance(node.args[index], ast.Starred):
                yield node.args[index], node.lineno
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            for value in _assigned(node, tables):
                yield value, node.lineno
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            positional = node.args.args[len(node.args.args) - len(node.args.defaults) :]
            pairs = [
                *zip(positional, node.args.defaults, strict=True),
                *zip(node.args.kwonlyargs, node.args.kw_defaults, strict=True),
            ]
            for arg, default in pairs:
                if arg.arg == "code" and default is not None and (relative, node.name) not in _NOT_ERROR_CODES:
                    yield default, node.lineno


def _readable(value: ast.expr) -> bool:
    """A code expression that is not a literal but passes on a code read elsewhere: a variable, ``exc.code``."""
    return isinstance(value, (ast.Name, ast.Attribute, ast.Subscript)) or (
        isinstance(value, ast.Constant) and not isinstance(value.value, str)  # None, or a number (an exit code)
    )


def scan(package: Path) -> list[Found]:
    """Every code written in ``package`` (its ``.py`` files), with where."""
    trees = {path: ast.parse(path.read_text(encoding="utf-8")) for path in sorted(package.rglob("*.py"))}
    classes: dict[str, int] = {}
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and (index := _class_code_index(node)) is not None:
                classes[node.name] = index
    found: list[Found] = []
    for path, tree in trees.items():
        relative = path.relative_to(package).as_posix()
        functions, _ = _callables(tree, relative)
        named = _module_constants(tree)
        for value, line in _module_codes(tree, relative, functions, classes):
            constants = [named[value.id]] if isinstance(value, ast.Name) and value.id in named else _constants(value)
            where = f"{relative}:{line}"
            if constants is not None:
                found.extend(Found(code, where, ast.unparse(value)) for code in constants)
            elif not _readable(value):
                found.append(Found(None, where, ast.unparse(value)))
    return found
