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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

import yaml
import yaml_rs

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

PathElement = str | int
Anchor = Literal["value", "key"]  # the node at the path, or the key naming it


@dataclass(frozen=True, slots=True)
class SourceFile:
    path: str  # POSIX path relative to the desired-state directory, used in every message
    text: str | None  # None when the bytes are not UTF-8
    encoding_error: str | None = None


@dataclass(frozen=True, slots=True)
class GitOrigin:
    commit: str  # full hexsha
    author_email: str


@dataclass(frozen=True, slots=True)
class Sources:
    files: tuple[SourceFile, ...]  # sorted by path
    origin: GitOrigin | None = None


@dataclass(frozen=True, slots=True)
class YamlProblem:
    code: str  # yaml-syntax | yaml-duplicate-key | yaml-multiple-documents | yaml-encoding
    message: str
    line: int  # 1-based
    column: int  # 1-based
    hint: str = ""


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
        return SourceFile(path, None, f"not UTF-8 text (byte {exc.start})")


def read_working_tree(directory: Path) -> Sources:
    """Every YAML file under ``directory`` (recursively, hidden files and folders skipped)."""
    if not directory.is_dir():
        raise ConfigError(
            f"the desired-state directory {str(directory)!r} does not exist",
            code="desired-dir-not-found",
            hint="pass --dir with a directory of *.yaml files",
        )
    found: list[tuple[str, Path]] = []
    for root, dirs, files in os.walk(directory, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not _is_hidden(d))
        for name in files:
            if _is_hidden(name) or not name.endswith(YAML_SUFFIXES):
                continue
            full = Path(root) / name
            found.append((full.relative_to(directory).as_posix(), full))
    found.sort()
    return Sources(tuple(_decode(rel, full.read_bytes()) for rel, full in found))


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
    files: list[SourceFile] = []
    for item in tree.traverse():
        if not isinstance(item, git.Blob):
            continue
        rel = PurePosixPath(item.path).relative_to(tree.path) if tree.path else PurePosixPath(item.path)
        if any(_is_hidden(part) for part in rel.parts) or not rel.name.endswith(YAML_SUFFIXES):
            continue
        if item.mode == 0o120000:  # a symbolic link: never followed
            continue
        files.append(_decode(rel.as_posix(), item.data_stream.read()))
    files.sort(key=lambda source: source.path)
    author = commit.author.email or ""
    return Sources(tuple(files), GitOrigin(commit.hexsha, author))


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
        raise YamlError(
            [YamlProblem("yaml-encoding", source.encoding_error or "not UTF-8", 1, 1, "save the file as UTF-8")]
        )
    text = source.text
    try:
        data: object = yaml_rs.loads(text, parse_datetime=False)
    except yaml_rs.YAMLDecodeError as exc:
        raise YamlError(_explain_rs_error(text, str(exc))) from exc
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


def _explain_rs_error(text: str, message: str) -> list[YamlProblem]:
    lines = [line for line in message.splitlines() if line.strip()]
    summary = lines[-1].strip() if lines else message
    if _RS_DUPLICATE.search(message):
        duplicates = Positions(text).duplicate_keys()
        if duplicates:
            return duplicates
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
    except yaml.YAMLError:
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
                except yaml.YAMLError:
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
