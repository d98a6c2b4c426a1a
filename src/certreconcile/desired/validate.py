"""Validate the files of a desired-state directory: every problem at once, with positions.

Order of work: parse each file (YAML, then the pydantic wire model), then run the
cross-file checks (duplicates, references, domains, policy, issuer capabilities) on
the files that parsed. A file that fails the schema is salvaged (:mod:`.salvage`): its
entries without schema errors are checked too, so cross-reference problems show in the
same run as the schema errors. When a file is not YAML at all (or cannot be salvaged),
checks that depend on the whole directory (references, policy, issuer capabilities) are
skipped: their findings would be noise caused by the broken file.

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
from certreconcile.desired.salvage import Unchecked, salvage
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


def _document(
    model: type[DesiredDocument], file: str, data: object, issues: list[Issue], unchecked: Unchecked
) -> tuple[DesiredDocument, tuple[int, ...] | None] | None:
    """The document of one file, and where its certificates are when it was salvaged after schema errors
    (recorded in ``issues``, worded by the complete model, whose hints list every installed kind, not only
    those ``model`` holds); None when nothing of it can be checked."""
    try:
        return model.model_validate({} if data is None else data), None
    except ValidationError:
        pass
    complete_model = desired_document_model()
    try:
        return complete_model.model_validate({} if data is None else data), None
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        for error in errors:
            found = schema_issue(error)
            issues.append(Issue(NodeRef(file, found.path, found.anchor), *found[2:]))
        salvaged = salvage(complete_model, data, errors, unchecked)
        return None if salvaged is None else (salvaged.document, salvaged.certificate_indexes)


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
    unchecked = Unchecked()
    certificate_indexes: dict[str, tuple[int, ...]] = {}
    complete = True
    for source in files:
        try:
            data = parse_yaml(source)
        except YamlError as exc:
            for problem in exc.problems:
                where = SourceLocation(source.path, problem.line, problem.column)
                diagnostics.append(Diagnostic(where, problem.code, problem.message, problem.hint))
            complete = False
            continue
        used = used_kinds(data) & installed
        if not used <= kinds:  # grows at most once per installed kind
            kinds |= used
            model = desired_document_model(kinds=kinds)
        parsed = _document(model, source.path, data, issues, unchecked)
        if parsed is None:
            complete = False
            continue
        documents.append((source.path, parsed[0]))
        if parsed[1] is not None:
            certificate_indexes[source.path] = parsed[1]
    declarations = Checker(issues, complete, directory, unchecked, certificate_indexes).run(documents)

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
