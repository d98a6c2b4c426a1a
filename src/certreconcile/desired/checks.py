"""Value checks of the parsed wire models, found by the :class:`Checked` marker in each field's type.

Every model of a parsed file is walked once: durations (above zero, at most 100 years),
certificate lifetimes (at least an hour), paths (no NUL), commands (not blank, quotes
balanced), HOST:PORT values (a port from 1 to 65535), target directories (not the
filesystem root; a relative one may not climb out of the desired-state directory with
``..``), webhook URLs whose host is an address literal (the address rules of
:mod:`certreconcile.domain.addresses`, as at deploy). Then the rules that need more than
one value: a target named twice by one certificate, two targets writing one directory, and
a target directory inside the Git repository of the desired state (its keys would be
committed) unless Git ignores it.

Findings are yielded as ``(path, code, message, hint)``; :mod:`certreconcile.desired.validate`
turns paths into positions.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable, Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple, get_args

from pydantic import BaseModel

from certreconcile.desired.documents import CertificateDocument
from certreconcile.desired.fields import Checked, ParsedDuration
from certreconcile.desired.git_probe import may_be_in_git_repository
from certreconcile.domain.durations import MIN_LIFETIME, DurationTooLongError, format_duration, parse_duration

__all__ = ["Finding", "certificate_findings", "format_path", "target_dir_findings", "value_findings"]

PathElement = str | int


class Finding(NamedTuple):
    path: tuple[PathElement, ...]
    code: str
    message: str
    hint: str
    related: tuple[PathElement, ...] | None = None  # for target_dir_findings: (file, *path) of the other one


def format_path(path: Sequence[PathElement]) -> str:
    """``certificates[3].domains[1]``; the empty path is ``(top level)``."""
    text = ""
    for element in path:
        if isinstance(element, int):
            text += f"[{element}]"
        elif element.replace("_", "a").replace("-", "a").isalnum():
            text += f".{element}" if text else element
        else:
            text += f"[{element!r}]"
    return text or "(top level)"


def _markers(annotation: Any) -> Iterator[Checked]:
    for arg in get_args(annotation):
        if isinstance(arg, Checked):
            yield arg
        else:
            yield from _markers(arg)


def _holds_models(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(_holds_models(arg) for arg in get_args(annotation))


@cache
def _fields(model: type[BaseModel]) -> tuple[tuple[str, Checked | None], ...]:
    """The fields worth visiting: ``(name, marker)``, marker None for fields holding models."""
    fields: list[tuple[str, Checked | None]] = []
    for name, info in model.model_fields.items():
        marker = next((m for m in info.metadata if isinstance(m, Checked)), None)
        marker = marker or next(_markers(info.annotation), None)
        if marker is not None or _holds_models(info.annotation):
            fields.append((name, marker))
    return tuple(fields)


_SCALAR: Any = object()  # the "key" of a field holding one value (not a dict or a sequence)


@cache
def _has_checks(model: type[BaseModel]) -> bool:
    """Can :func:`value_findings` find anything in a ``model``? (No: a certificate, whose values the checker
    reads itself: at 100,000 certificates, visiting each cost 0.3 s.)"""
    return bool(_fields(model)) or hasattr(model, "kind_findings")


def value_findings(model: BaseModel, path: tuple[PathElement, ...] = ()) -> Iterator[Finding]:
    """Every problem of the marked values in ``model`` and the models it holds."""
    if not _has_checks(type(model)):
        return
    kind_findings = getattr(model, "kind_findings", None)  # a plug-in kind's own checks (see kinds.py)
    if kind_findings is not None:
        yield from kind_findings(path)
    for name, marker in _fields(type(model)):
        value = getattr(model, name)
        here = (*path, name)
        items: Iterable[tuple[Any, Any]]
        if isinstance(value, dict):
            items = value.items()
        elif isinstance(value, tuple | list):
            items = enumerate(value)
        else:
            items = ((_SCALAR, value),)
        for key, item in items:
            if isinstance(item, BaseModel):
                if _has_checks(type(item)):  # the path is built only for what is visited
                    yield from value_findings(item, here if key is _SCALAR else (*here, key))
            elif marker is not None and isinstance(item, str):
                yield from _check(marker, here if key is _SCALAR else (*here, key), item)


def _check(marker: Checked, path: tuple[PathElement, ...], value: str) -> Iterator[Finding]:
    where = format_path(path)
    if marker in (Checked.DURATION, Checked.LIFETIME):
        try:  # parsed once, by validation (ParsedDuration); a plain string only from a model built otherwise
            if isinstance(value, ParsedDuration) and value.error is not None:
                raise value.error
            duration = value.delta if isinstance(value, ParsedDuration) else parse_duration(value)
        except DurationTooLongError as exc:
            yield Finding(path, "duration-too-long", f"{where}: {exc}", "write a duration of at most 36500d")
            return
        except ValueError as exc:
            yield Finding(path, "invalid-duration", f"{where}: {exc}", "write a whole number above zero and a unit")
            return
        if marker is Checked.LIFETIME and duration < MIN_LIFETIME:
            yield Finding(
                path,
                "lifetime-too-short",
                f"{where}: a certificate lifetime of {value} is shorter than {format_duration(MIN_LIFETIME)}: "
                "it would expire before it can be deployed and renewed",
                f"use {format_duration(MIN_LIFETIME)} or more, e.g. 24h or 90d",
            )
    elif marker in (Checked.PATH, Checked.TARGET_DIR) and "\0" in value:
        yield Finding(path, "path-has-nul", f"{where}: the path holds a NUL character", "remove the \\0 from the path")
    elif marker in (Checked.PATH, Checked.TARGET_DIR) and _CONTROL.search(value):
        yield Finding(
            path,
            "path-has-control-character",
            f"{where}: the path holds a control character (a line break, tab or escape)",
            "remove it: a path with a line break turns into two lines wherever it is shown or sent",
        )
    elif marker is Checked.TARGET_DIR:
        yield from _check_target_dir(path, value)
    elif marker is Checked.COMMAND:
        yield from _check_command(path, value)
    elif marker is Checked.HOST_PORT and not value.startswith("unix:"):
        port = int(value.rsplit(":", 1)[1])
        if not 0 < port < 65536:
            yield Finding(path, "invalid-port", f"{where}: port of {value!r} is out of range", "use a port 1-65535")


_CONTROL = re.compile("[\x01-\x1f\x7f-\x9f]")
def escapes_base(value: str) -> bool:
    """A relative path whose ``..`` climbs out of the directory it is relative to."""
    normal = os.path.normpath(value)
    return not os.path.isabs(value) and (normal == ".." or normal.startswith("../"))


def _check_target_dir(path: tuple[PathElement, ...], value: str) -> Iterator[Finding]:
    where = format_path(path)
    if os.path.normpath(value) in ("/", "//"):
        yield Finding(
            path,
            "target-dir-root",
            f"{where}: {value!r} is the filesystem root; a target writes a folder per certificate into its directory",
            "give the target a directory of its own, e.g. /etc/ssl/certreconcile",
        )
    elif escapes_base(value):
        yield Finding(
            path,
            "target-dir-escapes",
            f"{where}: the relative directory {value!r} climbs out of the desired-state directory with '..'",
            "write an absolute path for a directory outside the desired state, e.g. /etc/ssl/certreconcile",
        )


def _check_command(path: tuple[PathElement, ...], value: str) -> Iterator[Finding]:
    where = format_path(path)
    problem = ""
    if "\0" in value:
        problem = "holds a NUL character"
    else:
        try:
            if not shlex.split(value):
                problem = "is blank"
        except ValueError as exc:  # "No closing quotation", "No escaped character"
            problem = f"cannot be split into arguments ({str(exc).lower()})"
    if problem:
        yield Finding(
            path,
            "invalid-command",
            f"{where}: the command {value!r} {problem}",
            "write the program and its arguments with balanced quotes; no shell runs it; null: no command",
        )


def certificate_findings(cert: CertificateDocument) -> Iterator[Finding]:
    """A target listed twice in one certificate's ``targets``."""
    first: dict[str, int] = {}
    for index, target in enumerate(cert.targets):
        if target in first:
            yield Finding(
                ("targets", index),
                "duplicate-target",
                f"certificate {cert.name!r} lists the target {target!r} twice (also targets[{first[target]}])",
                "list each target once",
            )
        else:
            first[target] = index


class TargetDir(NamedTuple):
    file: str
    path: tuple[PathElement, ...]  # of the directory's value, e.g. ("targets", "web", "files", "dir")
    value: str


def target_dirs(file: str, section: str, name: str, kind: str, config: BaseModel) -> list[TargetDir]:
    return [
        TargetDir(file, (section, name, kind, field), getattr(config, field))
        for field, marker in _fields(type(config))
        if marker is Checked.TARGET_DIR
    ]


def target_dir_findings(dirs: Sequence[TargetDir], directory: Path | None) -> Iterator[tuple[TargetDir, Finding]]:
    """Two targets writing one directory; a target directory inside the desired state's Git work tree.

    Relative directories are relative to ``directory`` (the desired-state directory); without it
    only the written forms are compared and the repository is not looked at.
    """
    base = directory.resolve() if directory is not None else None
    seen: dict[str, TargetDir] = {}
    for target in dirs:
        if "\0" in target.value or escapes_base(target.value):
            continue  # reported as path-has-nul or target-dir-escapes
        key = os.path.normpath(base / target.value if base is not None else target.value)
        if key in seen:
            other = seen[key]
            yield (
                target,
                Finding(
                    target.path,
                    "duplicate-target-dir",
                    f"{format_path(target.path[:2])} writes into {target.value!r}, as {format_path(other.path[:2])} "
                    "(at {related}) does: they would overwrite each other's files",
                    "give each target a directory of its own",
                    (other.file, *other.path),
                ),
            )
        else:
            seen[key] = target
    if base is not None:
        yield from _inside_repository(list(seen.values()), base)


def _inside_repository(dirs: Sequence[TargetDir], base: Path) -> Iterator[tuple[TargetDir, Finding]]:
    if not dirs or not may_be_in_git_repository(base):
        return
    try:
        import git
    except ImportError:  # GitPython finds no git program (a container without git): no repository to check
        return
    try:
        repo = git.Repo(base, search_parent_directories=True)
        root = Path(repo.working_tree_dir or "").resolve()
    except (git.InvalidGitRepositoryError, git.NoSuchPathError, ValueError):
        return
    inside = [(target, (base / target.value).resolve()) for target in dirs]
    inside = [(target, path) for target, path in inside if path == root or root in path.parents]
    if not inside:
        return
    probes = [str(path / "privkey.pem") for _, path in inside]  # a file inside: "dir/" patterns match too
    try:
        ignored = set(repo.ignored(*probes))
    except git.GitCommandError:
        ignored = set()
    for (target, path), probe in zip(inside, probes, strict=True):
        if probe not in ignored:
            yield (
                target,
                Finding(
                    target.path,
                    "target-dir-in-repository",
                    f"{format_path(target.path)}: {target.value!r} is inside the Git repository {root} and not "
                    "ignored: the private keys written there could be committed",
                    "write outside the repository (e.g. /etc/ssl/certreconcile), or into a git-ignored directory "
                    f"such as .certreconcile/ (resolved: {path})",
                ),
            )
