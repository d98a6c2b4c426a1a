"""Validate the files of a desired-state directory: every problem at once, with positions.

Order of work: parse each file (YAML, then the pydantic wire model), then run the
cross-file checks (duplicates, references, domains, policy, issuer capabilities) on
the files that parsed. When a file failed to parse, checks that depend on the whole
directory (references, policy, issuer capabilities) are skipped: their findings
would be noise caused by the broken file.

Problems are first recorded against a path (``certificates[3].domains[1]``) and only
turned into ``file:line:column`` at the end, so positions cost nothing on success.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from certreconcile.desired.checker import Checker
from certreconcile.desired.checks import (
    format_path,
)
from certreconcile.desired.declarations import (
    Declarations,
    DeclaredCertificate,
    DeclaredPlugin,
    Diagnostic,
    Issue,
    NodeRef,
)
from certreconcile.desired.documents import (
    DesiredDocument,
    desired_document_model,
)
from certreconcile.desired.kinds import GROUPS, kind_names
from certreconcile.desired.loader import (
    Positions,
    SourceFile,
    YamlError,
    parse_yaml,
)
from certreconcile.desired.model import SourceLocation
from certreconcile.desired.schema_errors import schema_issue

__all__ = [
    "Declarations",
    "DeclaredCertificate",
    "DeclaredPlugin",
    "Diagnostic",
    "NodeRef",
    "format_path",
    "validate_sources",
]


# ---------------------------------------------------------------- entry point


_PLUGIN_SECTIONS = ("issuers", "dns_providers", "targets")


def used_kinds(data: object) -> frozenset[str]:
    """Every key of every plugin entry (and of ``kms``) in a parsed document: a superset of the kinds
    it declares, whatever its shape (the model reports a malformed section)."""
    if not isinstance(data, dict):
        return frozenset()
    keys: set[str] = set()
    kms = data.get("kms")
    if isinstance(kms, dict):
        keys.update(key for key in kms if isinstance(key, str))
    for section in _PLUGIN_SECTIONS:
        entries = data.get(section)
        if isinstance(entries, dict):
            for entry in entries.values():
                if isinstance(entry, dict):
                    keys.update(key for key in entry if isinstance(key, str))
    return frozenset(keys)


def _validate_document(
    model: type[DesiredDocument], path: str, data: object, issues: list[Issue]
) -> DesiredDocument | None:
    """``data`` validated by ``model``; None after adding its issues, worded by the complete model
    (whose hints list every installed kind, not only those ``model`` holds)."""
    try:
        return model.model_validate({} if data is None else data)
    except ValidationError:
        pass
    try:
        desired_document_model().model_validate({} if data is None else data)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            found = schema_issue(error)
            issues.append(Issue(NodeRef(path, found.path, found.anchor), *found[2:]))
    return None


def validate_sources(
    files: Sequence[SourceFile], *, with_locations: bool = False, directory: Path | None = None
) -> tuple[Declarations, list[Diagnostic], dict[NodeRef, SourceLocation]]:
    """Parse and check every file. Returns the merged declarations, every diagnostic (sorted)
    and, when ``with_locations``, the position of each declared plugin and certificate.

    ``directory`` (the desired-state directory) resolves relative target directories, to refuse
    one inside its Git repository; without it that check is skipped."""
    positions = {source.path: Positions(source.text) for source in files}
    diagnostics: list[Diagnostic] = []
    issues: list[Issue] = []
    documents: list[tuple[str, DesiredDocument]] = []
    installed = frozenset(kind for group in GROUPS for kind in kind_names(group))
    kinds: frozenset[str] = frozenset()  # the installed kinds the files parsed so far use
    model = desired_document_model(kinds=kinds)
    for source in files:
        try:
            data = parse_yaml(source)
        except YamlError as exc:
            diagnostics.extend(
                Diagnostic(
                    SourceLocation(source.path, problem.line, problem.column),
                    problem.code,
                    problem.message,
                    problem.hint,
                )
                for problem in exc.problems
            )
            continue
        used = used_kinds(data) & installed
        if not used <= kinds:  # grows at most once per installed kind
            kinds |= used
            model = desired_document_model(kinds=kinds)
        document = _validate_document(model, source.path, data, issues)
        if document is not None:
            documents.append((source.path, document))
    complete = not diagnostics and not issues
    declarations = Checker(issues, complete, directory).run(documents)

    def resolve(ref: NodeRef) -> SourceLocation:
        line, column = positions[ref.file].locate(ref.path, ref.anchor)
        return SourceLocation(ref.file, line, column)

    for issue in issues:
        message = issue.message
        if issue.related is not None:
            related = resolve(issue.related)
            message = message.replace("{related}", f"{related.file}:{related.line}")
        diagnostics.append(Diagnostic(resolve(issue.ref), issue.code, message, issue.hint))
    diagnostics.sort()
    located: dict[NodeRef, SourceLocation] = {}
    if with_locations and not diagnostics:
        located = {ref: resolve(ref) for ref in _located_refs(declarations)}
    return declarations, diagnostics, located


def _located_refs(declarations: Declarations) -> list[NodeRef]:
    """The declarations whose positions a spec's ``location`` gives (``with_locations``)."""
    refs = [plugin.ref for plugin in declarations.issuers.values()]
    refs += [plugin.ref for plugin in declarations.targets.values()]
    refs += [plugin.ref for plugin in declarations.dns_providers.values()]
    refs += [cert.ref for cert in declarations.certificates.values()]
    refs += [agent.ref for agent in declarations.agents.values()]
    if declarations.kms is not None:
        refs.append(declarations.kms.ref)
    if declarations.notify is not None and declarations.notify_ref is not None:
        ref = declarations.notify_ref
        refs.append(ref)
        refs += [NodeRef(ref.file, (*ref.path, "sinks", name), "key") for name in declarations.notify.sinks]
    return refs
