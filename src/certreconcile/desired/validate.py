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
    model = desired_document_model()
    unchecked = Unchecked()
    certificate_indexes: dict[str, tuple[int, ...]] = {}
    complete = True
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
            complete = False
            continue
        try:
            documents.append((source.path, model.model_validate({} if data is None else data)))
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            for error in errors:
                found = schema_issue(error)
                issues.append(Issue(NodeRef(source.path, found.path, found.anchor), *found[2:]))
            salvaged = salvage(model, data, errors, unchecked)
            if salvaged is None:
                complete = False
            else:
                documents.append((source.path, salvaged.document))
                certificate_indexes[source.path] = salvaged.certificate_indexes
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
        refs = [plugin.ref for plugin in declarations.issuers.values()]
        refs += [plugin.ref for plugin in declarations.targets.values()]
        refs += [plugin.ref for plugin in declarations.dns_providers.values()]
        refs += [cert.ref for cert in declarations.certificates.values()]
        refs += [agent.ref for agent in declarations.agents.values()]
        if declarations.kms is not None:
            refs.append(declarations.kms.ref)
        located = {ref: resolve(ref) for ref in refs}
    return declarations, diagnostics, located
