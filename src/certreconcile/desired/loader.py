"""Read desired-state files (working tree or a git ref), parse YAML, map paths to positions.

Hot path: every ``*.yaml``/``*.yml`` file is parsed with ``yaml_rs`` (YAML 1.2, rejects
duplicate keys, bounded aliases), about 20x faster than PyYAML. Positions are NOT
computed on the hot path: only when something is wrong (or when the caller asks for
locations) is a file composed with PyYAML, whose node marks give line:column for a
path such as ``certificates[3].domains[1]``. PyYAML reads YAML 1.1 (``no`` is a bool
there); that difference is irrelevant here, since only node positions are used.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import yaml
import yaml_rs

from certreconcile.desired.yaml_guard import BIDI_CONTROLS, CharacterProblem, check_outline, forbidden_characters
from certreconcile.desired.yaml_limits import alias_excess, data_too_deep, depth_excess, forbidden_tag
from certreconcile.errors import ConfigError

__all__ = [
    "YAML_SUFFIXES",
    "Anchor",
    "GitOrigin",
    "PathElement",
    "Positions",
    "SourceFile",
    "Sources",
    "YamlProblem",
    "parse_yaml",
    "read_git_ref",
    "read_sources",
    "read_working_tree",
]

YAML_SUFFIXES = (".yaml", ".yml")
MAX_FILE_BYTES = 32 << 20  # one desired-state file; 10,000 certificates take about 1.5 MiB

PathElement = str | int
Anchor = Literal["value", "key"]  # the node at the path, or the key naming it


@dataclass(frozen=True, slots=True)
class YamlProblem:
    code: str  # yaml-syntax | yaml-duplicate-key | yaml-multiple-documents | yaml-encoding | yaml-forbidden-character
    # | yaml-parser-mismatch | desired-file-not-regular | desired-file-outside | desired-file-too-large
    message: str
    line: int  # 1-based
    column: int  # 1-based
    hint: str = ""


@dataclass(frozen=True, slots=True)
class SourceFile:
    path: str  # POSIX path relative to the desired-state directory, used in every message
    text: str | None  # None when the file could not be read as text: see ``problem``
    problem: YamlProblem | None = None


@dataclass(frozen=True, slots=True)
class GitOrigin:
    commit: str  # full hexsha
    author_email: str


@dataclass(frozen=True, slots=True)
class Sources:
    files: tuple[SourceFile, ...]  # sorted by path
    origin: GitOrigin | None = None


class YamlError(Exception):
    def __init__(self, problems: list[YamlProblem]) -> None:
        super().__init__(problems[0].message if problems else "YAML error")
        self.problems = problems


# ---------------------------------------------------------------- reading


def _is_hidden(part: str) -> bool:
    return part.startswith(".")


def _decode(path: str, data: bytes) -> SourceFile:
    try:
        return SourceFile(path, data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        column = len(data[line_start : exc.start].decode("utf-8", errors="replace")) + 1
        problem = YamlProblem(
            "yaml-encoding",
            f"not UTF-8 text: byte 0x{data[exc.start]:02x} cannot start or continue a character",
            data.count(b"\n", 0, exc.start) + 1,
            column,
            "save the file as UTF-8 (without a byte-order mark in the middle)",
        )
        return SourceFile(path, None, problem)


def _unreadable(path: str, code: str, message: str, hint: str) -> SourceFile:
    return SourceFile(path, None, YamlProblem(code, message, 1, 1, hint))


def _read_file(root: Path, relative: str, full: Path) -> SourceFile:
    """One file's text; FIFOs, devices, links leaving ``root`` and huge files are refused unread."""
    try:
        resolved = full.resolve(strict=True)
    except (OSError, RuntimeError):
        return _unreadable(relative, "desired-file-not-regular", "a broken or looping symbolic link", "remove it")
    if not resolved.is_relative_to(root):
        return _unreadable(
            relative,
            "desired-file-outside",
            f"a symbolic link to {str(resolved)!r}, outside the desired-state directory",
            "declarations live inside the directory: copy the file in instead of linking to it",
        )
    try:  # O_NONBLOCK: opening a FIFO must not wait for a writer
        descriptor = os.open(resolved, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        return _unreadable(relative, "desired-file-not-regular", f"cannot be opened: {exc.strerror}", "check it")
    with os.fdopen(descriptor, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            return _unreadable(
                relative,
                "desired-file-not-regular",
                "not a regular file (a FIFO, socket or device)",
                "remove it, or rename it so it does not end in .yaml/.yml",
            )
        data = handle.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        return _unreadable(
            relative,
            "desired-file-too-large",
            f"larger than {MAX_FILE_BYTES // (1 << 20)} MiB",
            "split the declarations over several files",
        )
    return _decode(relative, data)


def read_working_tree(directory: Path) -> Sources:
    """Every YAML file under ``directory`` (recursively, hidden files and folders skipped)."""
    if not directory.is_dir():
        raise ConfigError(
            f"the desired-state directory {str(directory)!r} does not exist",
            code="desired-dir-not-found",
            hint="pass --dir with a directory of *.yaml files",
        )
    top = directory.resolve()
    found: list[tuple[str, Path]] = []
    for root, dirs, files in os.walk(directory, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not _is_hidden(d))
        for name in files:
            if _is_hidden(name) or not name.endswith(YAML_SUFFIXES):
                continue
            full = Path(root) / name
            found.append((full.relative_to(directory).as_posix(), full))
    found.sort()
    return Sources(tuple(_read_named_file(top, rel, full) for rel, full in found))


_UNPRINTABLE_NAME = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _read_named_file(root: Path, relative: str, full: Path) -> SourceFile:
    """A file whose name holds control characters is refused unread: its name starts every message."""
    if not _UNPRINTABLE_NAME.search(relative):
        return _read_file(root, relative, full)
    return _bad_name(relative)


def _bad_name(relative: str) -> SourceFile:
    shown = _UNPRINTABLE_NAME.sub(lambda found: f"\\x{ord(found.group()):02x}", relative)
    return _unreadable(
        shown,
        "desired-file-name",
        "the file name holds a control character (a line break, an escape sequence...), shown here escaped",
        "rename the file to printable characters",
    )


def read_git_ref(directory: Path, ref: str) -> Sources:
    """The YAML files of ``directory`` as committed at ``ref`` (the working tree is not read)."""
    import git  # only this function needs GitPython

    start = directory if directory.exists() else Path.cwd()
    try:
        repo = git.Repo(start, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
        raise ConfigError(
            f"{str(directory)!r} is not inside a git repository",
            code="not-a-git-repository",
            hint="run without --ref to read the working tree",
        ) from exc
    try:
        commit = repo.commit(ref)
    except (git.BadName, git.GitError, ValueError) as exc:
        raise ConfigError(
            f"the git ref {ref!r} does not name a commit",
            code="git-ref-not-found",
            hint="use a branch, tag or commit of this repository",
        ) from exc
    root = Path(repo.working_tree_dir or ".").resolve()
    try:
        relative = directory.resolve().relative_to(root).as_posix()
    except ValueError as exc:
        raise ConfigError(
            f"{str(directory)!r} is outside the repository at {str(root)!r}", code="desired-dir-outside-repository"
        ) from exc
    tree = commit.tree
    if relative not in ("", "."):
        try:
            tree = tree / relative
        except KeyError as exc:
            raise ConfigError(
                f"{relative!r} does not exist at {ref!r}", code="desired-dir-not-found", hint="check the ref and --dir"
            ) from exc
    files = _committed_files(tree)
    files.sort(key=lambda source: source.path)
    author = commit.author.email or ""
    return Sources(tuple(files), GitOrigin(commit.hexsha, author))


def _committed_files(tree: Any) -> list[SourceFile]:
    """The YAML files under a git tree (hidden files and symbolic links skipped), unsorted."""
    import git

    files: list[SourceFile] = []
    for item in tree.traverse():
        if not isinstance(item, git.Blob):
            continue
        rel = PurePosixPath(item.path).relative_to(tree.path) if tree.path else PurePosixPath(item.path)
        if any(_is_hidden(part) for part in rel.parts) or not rel.name.endswith(YAML_SUFFIXES):
            continue
        if item.mode == 0o120000:  # a symbolic link: never followed
            continue
        if _UNPRINTABLE_NAME.search(rel.as_posix()):
            files.append(_bad_name(rel.as_posix()))
            continue
        if item.size > MAX_FILE_BYTES:
            files.append(
                _unreadable(
                    rel.as_posix(),
                    "desired-file-too-large",
                    f"larger than {MAX_FILE_BYTES // (1 << 20)} MiB",
                    "split the declarations over several files",
                )
            )
            continue
        files.append(_decode(rel.as_posix(), item.data_stream.read()))
    return files


def read_sources(directory: Path, ref: str | None = None) -> Sources:
    return read_working_tree(directory) if ref is None else read_git_ref(directory, ref)


# ---------------------------------------------------------------- parsing

_RS_POSITION = re.compile(r"line (\d+), column (\d+)")
_RS_DUPLICATE = re.compile(r"duplicate mapping key")


def parse_yaml(source: SourceFile) -> object:
    """The YAML document of ``source`` as plain data (``None`` for an empty file).

    Raises :class:`YamlError` with positioned problems.
    """
    if source.text is None:
        raise YamlError([source.problem or YamlProblem("yaml-encoding", "not UTF-8", 1, 1, "save the file as UTF-8")])
    text = source.text
    characters = forbidden_characters(text)
    if characters:
        raise YamlError([_character_problem(found) for found in characters])
    tag = forbidden_tag(text)
    if tag is not None:
        raise YamlError([YamlProblem("yaml-tag", tag.message, tag.line, tag.column, _TAG_HINT)])
    try:
        data: object = yaml_rs.loads(text, parse_datetime=False)
    except yaml_rs.YAMLDecodeError as exc:
        raise YamlError(_explain_rs_error(text, str(exc))) from exc
    if data_too_deep(data):
        raise YamlError([_too_deep(text)])
    mismatch = check_outline(text, data)
    if mismatch is not None:
        raise YamlError(
            [
                YamlProblem(
                    "yaml-parser-mismatch",
                    mismatch.message,
                    mismatch.line,
                    mismatch.column,
                    "write this part in plain block style; certreconcile does not guess which reading is right",
                )
            ]
        )
    if isinstance(data, list):
        second = _second_document(text)
        if second is not None:
            raise YamlError(
                [
                    YamlProblem(
                        "yaml-multiple-documents",
                        "a desired-state file holds one YAML document; found a second one",
                        *second,
                        "split the documents into separate files",
                    )
                ]
            )
    return data


_TAG_HINT = "write the plain value: only !!str, !!int, !!float, !!bool, !!null, !!seq and !!map are allowed"


def _too_deep(text: str) -> YamlProblem:
    deep = depth_excess(text)
    line, column = (deep.line, deep.column) if deep else (1, 1)
    message = deep.message if deep else "collections nested too deep"
    return YamlProblem("yaml-too-deep", message, line, column, "a desired-state file nests a few levels: flatten it")


def _character_problem(found: CharacterProblem) -> YamlProblem:
    if found.character == "\ufeff":
        hint = "a byte-order mark belongs at the very start of a file or nowhere: delete this one"
    elif found.character in BIDI_CONTROLS:
        hint = "delete it: a bidirectional control shows the text in another order than it is read"
    else:
        hint = "delete it: a control character usually means a damaged file or pasted binary data"
    return YamlProblem(
        "yaml-forbidden-character",
        f"{found.description} is not allowed in a desired-state file",
        found.line,
        found.column,
        hint,
    )


def _explain_rs_error(text: str, message: str) -> list[YamlProblem]:
    lines = [line for line in message.splitlines() if line.strip()]
    summary = lines[-1].strip() if lines else message
    if _RS_DUPLICATE.search(message):
        duplicates = Positions(text).duplicate_keys()
        if duplicates:
            return duplicates
    if "alias" in message:
        bomb = alias_excess(text)
        if bomb is not None:
            hint = "anchors and aliases expand too much; write the values out"
            return [YamlProblem("yaml-alias-limit", f"{bomb.message}: {summary}", bomb.line, bomb.column, hint)]
    match = _RS_POSITION.search(message)
    if match:
        return [YamlProblem("yaml-syntax", summary, int(match.group(1)), int(match.group(2)))]
    # No position from yaml_rs: ask PyYAML where it fails, if it does.
    mark = Positions(text).syntax_error_mark()
    line, column = mark if mark else (1, 1)
    code = "yaml-duplicate-key" if _RS_DUPLICATE.search(message) else "yaml-syntax"
    hint = "anchors and aliases expand too much; write the values out" if "alias" in message else ""
    return [YamlProblem(code, summary, line, column, hint)]


def _second_document(text: str) -> tuple[int, int] | None:
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:  # e.g. a bare document after "...", which YAML 1.1 does not allow
        mark = exc.problem_mark
        if mark is not None and "document start" in str(exc.problem):
            return mark.line + 1, mark.column + 1
        return None
    except (yaml.YAMLError, RecursionError):
        return None
    if len(nodes) > 1 and nodes[1] is not None:
        mark = nodes[1].start_mark
        return mark.line + 1, mark.column + 1
    return None


# ---------------------------------------------------------------- positions


@dataclass(slots=True)
class Positions:
    """Line:column of paths in one file, from a PyYAML compose done on first use."""

    text: str | None
    _root: yaml.Node | None = field(default=None, init=False)
    _composed: bool = field(default=False, init=False)
    _error_mark: tuple[int, int] | None = field(default=None, init=False)

    def _compose(self) -> yaml.Node | None:
        if not self._composed:
            self._composed = True
            if self.text is not None:
                try:
                    self._root = yaml.compose(self.text, Loader=yaml.SafeLoader)
                except yaml.MarkedYAMLError as exc:
                    mark = exc.problem_mark or exc.context_mark
                    if mark is not None:
                        self._error_mark = (mark.line + 1, mark.column + 1)
                except (yaml.YAMLError, RecursionError):  # RecursionError: a safety net behind yaml-too-deep
                    self._root = None
        return self._root

    def syntax_error_mark(self) -> tuple[int, int] | None:
        self._compose()
        return self._error_mark

    def locate(self, path: Sequence[PathElement], anchor: Anchor = "value") -> tuple[int, int]:
        """The 1-based line and column of ``path``; the deepest existing ancestor if it is absent."""
        node = self._compose()
        if node is None:
            return 1, 1
        key_node: yaml.Node | None = None
        for element in path:
            child = _child(node, element)
            if child is None:
                key_node = None
                break
            key_node, node = child
        target = key_node if anchor == "key" and key_node is not None else node
        return target.start_mark.line + 1, target.start_mark.column + 1

    def duplicate_keys(self) -> list[YamlProblem]:
        root = self._compose()
        problems: list[YamlProblem] = []
        if root is None:
            return problems
        stack: list[yaml.Node] = [root]
        seen_nodes: set[int] = set()
        while stack:
            node = stack.pop()
            if id(node) in seen_nodes:
                continue
            seen_nodes.add(id(node))
            if isinstance(node, yaml.MappingNode):
                first: dict[tuple[str, str], int] = {}
                for key, value in node.value:
                    stack.append(value)
                    if not isinstance(key, yaml.ScalarNode):
                        continue
                    ident = (key.tag, key.value)
                    if ident in first:
                        problems.append(
                            YamlProblem(
                                "yaml-duplicate-key",
                                f"duplicate key {key.value!r}; first at line {first[ident]}",
                                key.start_mark.line + 1,
                                key.start_mark.column + 1,
                                "each key may appear once in a mapping; merge or rename the entries",
                            )
                        )
                    else:
                        first[ident] = key.start_mark.line + 1
            elif isinstance(node, yaml.SequenceNode):
                stack.extend(node.value)
        problems.sort(key=lambda problem: (problem.line, problem.column))
        return problems


def _child(node: yaml.Node, element: PathElement) -> tuple[yaml.Node | None, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        wanted = str(element)
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == wanted:
                return key, value
        return None
    if isinstance(node, yaml.SequenceNode) and isinstance(element, int):
        if 0 <= element < len(node.value):
            return None, node.value[element]
        return None
    return None
