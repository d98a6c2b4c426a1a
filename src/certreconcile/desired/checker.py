"""The cross-file checks of a desired state: duplicates, references, domains, policy, issuer capabilities.

:func:`certreconcile.desired.validate.validate_sources` parses the files, then runs a
:class:`Checker` over the documents that parsed; every problem is recorded against a path
(an :class:`Issue`) and turned into ``file:line:column`` by the caller.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel

from certreconcile.desired.agent_refs import agent_findings, is_agent_reference
from certreconcile.desired.certificate_checks import CertificateChecks
from certreconcile.desired.checks import (
    TargetDir,
    format_path,
    target_dir_findings,
    target_dirs,
    value_findings,
)
from certreconcile.desired.declarations import (
    Declarations,
    DeclaredAgent,
    DeclaredPlugin,
    Issue,
    NodeRef,
)
from certreconcile.desired.documents import (
    CertificateDocument,
    DesiredDocument,
    DnsProviderEntry,
    PluginEntry,
    TargetEntry,
)
from certreconcile.desired.fields import ParsedDuration
from certreconcile.desired.kinds import issuer_hook
from certreconcile.desired.loader import PathElement
from certreconcile.desired.salvage import Unchecked
from certreconcile.desired.shortcut import PlainCertificates
from certreconcile.domain.durations import RenewBefore
from certreconcile.domain.names import (
    DomainNameError,
    is_wildcard,
    normalize_domain,
)

__all__ = ["Checker"]

def _parsed(text: ParsedDuration | None) -> timedelta | None:
    """A duration, or None when it is absent or invalid (value_findings reports it)."""
    return text.delta_or_none if text is not None else None


class Checker(CertificateChecks):
    """Merges the documents into :class:`Declarations`, recording every problem as an issue."""

    SHORTCUT = True  # PlainCertificates for certificates with nothing to report (off: tests compare both ways)

    def __init__(
        self,
        issues: list[Issue],
        complete: bool,
        directory: Path | None = None,
        unchecked: Unchecked | None = None,
        certificate_indexes: Mapping[str, Sequence[int]] | None = None,
    ) -> None:
        self.issues = issues
        self.complete = complete
        self.directory = directory
        # files salvaged after schema errors: what was set aside, and where each kept certificate is in the file
        self.unchecked = unchecked or Unchecked()
        self.certificate_indexes = certificate_indexes or {}
        self.target_dirs: list[TargetDir] = []
        self.result = Declarations()
        self._renew_cache: dict[str, RenewBefore] = {}
        self._lifetimes: dict[str, timedelta | None] = {}
        self._allowed: tuple[frozenset[str], tuple[str, ...]] = (frozenset(), ())
        # The declared target names when nothing failed the schema (PlainCertificates' condition), else None.
        self._declared_targets: frozenset[str] | None = None

    def add(self, ref: NodeRef, code: str, message: str, hint: str = "", related: NodeRef | None = None) -> None:
        self.issues.append(Issue(ref, code, message, hint, related))

    def run(self, documents: Sequence[tuple[str, DesiredDocument]]) -> Declarations:
        cert_refs: list[tuple[CertificateDocument, NodeRef]] = []
        policy_patterns: list[tuple[str, NodeRef]] = []
        for file, document in documents:
            for finding in value_findings(document):
                self.add(NodeRef(file, self._in_file(file, finding.path)), finding.code, finding.message, finding.hint)
            if document.kms is not None:
                self._merge_kms(file, document)
            for section, entries, merged in (
                ("issuers", document.issuers, self.result.issuers),
                ("dns_providers", document.dns_providers, self.result.dns_providers),
                ("targets", document.targets, self.result.targets),
            ):
                for name, entry in entries.items():
                    self._merge_plugin(file, section, name, entry, merged)
            for name in document.agents:
                self._merge_agent(file, name, document)
            self._merge_notify(file, document)
            patterns = self._merge_policy(file, document)
            if patterns is not None:
                policy_patterns = patterns
            if file in self.certificate_indexes:  # salvaged: the index in the file, not in the document
                cert_refs.extend(
                    (cert, NodeRef(file, self._in_file(file, ("certificates", index))))
                    for index, cert in enumerate(document.certificates)
                )
            else:
                cert_refs.extend(
                    (cert, NodeRef(file, ("certificates", index))) for index, cert in enumerate(document.certificates)
                )
        if self.complete:
            for target, finding in target_dir_findings(self.target_dirs, self.directory):
                related = NodeRef(str(finding.related[0]), finding.related[1:]) if finding.related else None
                self.add(NodeRef(target.file, finding.path), finding.code, finding.message, finding.hint, related)
        self.result.allowed_domains = allowed = self._policy(policy_patterns)
        self._allowed = (
            frozenset(p for p in allowed if not is_wildcard(p)),
            tuple(p[1:] for p in allowed if is_wildcard(p)),
        )
        self._merge_certificates(cert_refs)
        return self.result

    def _in_file(self, file: str, path: tuple[PathElement, ...]) -> tuple[PathElement, ...]:
        """``path`` with the certificate's index in the file (a salvaged document holds only some of them)."""
        indexes = self.certificate_indexes.get(file)
        if indexes is None or len(path) < 2 or path[0] != "certificates" or not isinstance(path[1], int):
            return path
        return ("certificates", indexes[path[1]], *path[2:])

    def _merge_policy(self, file: str, document: DesiredDocument) -> list[tuple[str, NodeRef]] | None:
        """The allowed-domain patterns of the first ``policy`` declared (None: this file declares none)."""
        if document.policy is None:
            return None
        ref = NodeRef(file, ("policy",), "key")
        if self.result.policy_ref is not None:
            self.add(
                ref,
                "duplicate-policy",
                "`policy` is declared again; first at {related}",
                "declare policy in one file only",
                self.result.policy_ref,
            )
            return None
        self.result.policy_ref = ref
        return [
            (pattern, NodeRef(file, ("policy", "allowed_domains", index)))
            for index, pattern in enumerate(document.policy.allowed_domains)
        ]

    def _merge_notify(self, file: str, document: DesiredDocument) -> None:
        """Keep the first ``notify`` declared; another file declaring it again is an error."""
        if document.notify is None:
            return
        ref = NodeRef(file, ("notify",), "key")
        if self.result.notify_ref is not None:
            self.add(ref, "duplicate-notify", "`notify` is declared again; first at {related}",
                     "declare notify in one file only", self.result.notify_ref)  # fmt: skip
            return
        self.result.notify, self.result.notify_ref = document.notify, ref

    def _merge_certificates(self, cert_refs: list[tuple[CertificateDocument, NodeRef]]) -> None:
        unchecked = self.unchecked
        if not unchecked.whole_sections and not any(unchecked.names.values()):
            targets = frozenset(self.result.targets)
            self._declared_targets = None if any(map(is_agent_reference, targets)) else targets
        plain = self._plain()
        first_seen: dict[str, NodeRef] = {}  # the certificate's ref: its "name" child only for a message
        certificates = self.result.certificates
        for cert, ref in cert_refs:
            if cert.name in first_seen:
                self.add(
                    ref.child("name"),
                    "duplicate-name",
                    f"certificate name {cert.name!r} is already used at {{related}}",
                    "certificate names are unique across all files; rename one",
                    first_seen[cert.name].child("name"),
                )
                continue
            first_seen[cert.name] = ref
            declared = plain.declare(cert, ref) if plain is not None else None
            if declared is None:
                declared = self._certificate(cert, ref)
            if declared is not None:
                certificates[cert.name] = declared

    def _plain(self) -> PlainCertificates | None:
        """The shortcut (:mod:`.shortcut`) when every reference can be checked and nothing failed the schema."""
        if not self.complete or self._declared_targets is None or self.unchecked.policy or not self.SHORTCUT:
            return None
        result = self.result
        return PlainCertificates(
            result.issuers,
            self._lifetime,
            self._declared_targets,
            result.dns_providers,
            self._renew_cache,
            self._allowed if result.allowed_domains else None,
        )

    # -- agents

    def _merge_agent(self, file: str, name: str, document: DesiredDocument) -> None:
        ref = NodeRef(file, ("agents", name), "key")
        merged = self.result.agents
        if name in merged:
            self.add(
                ref,
                "duplicate-plugin-name",
                f"agents entry {name!r} is already declared at {{related}}",
                "names in agents are unique across all files; rename one",
                merged[name].ref,
            )
            return
        entry = document.agents[name]
        for finding in agent_findings(name, entry):
            self.add(ref.child(*finding.path), finding.code, finding.message, finding.hint)
        timeout = _parsed(entry.timeout)
        merged[name] = DeclaredAgent(name, entry.url, timeout, ref)

    # -- plugins

    def _merge_kms(self, file: str, document: DesiredDocument) -> None:
        ref = NodeRef(file, ("kms",), "key")
        if document.kms is None:
            return
        if self.result.kms is not None:
            self.add(
                ref,
                "duplicate-kms",
                "`kms` is declared again; first at {related}",
                "declare kms in one file only",
                self.result.kms.ref,
            )
            return
        kind, config = document.kms.kind()
        self.result.kms = DeclaredPlugin(kind, kind, config, None, ref)
        self.result.kms_cache = document.kms.cache

    def _merge_plugin(
        self, file: str, section: str, name: str, entry: PluginEntry, merged: dict[str, DeclaredPlugin]
    ) -> None:
        ref = NodeRef(file, (section, name), "key")
        if name in merged:
            self.add(
                ref,
                "duplicate-plugin-name",
                f"{section} entry {name!r} is already declared at {{related}}",
                f"names in {section} are unique across all files; rename one",
                merged[name].ref,
            )
            return
        kind, config = entry.kind()
        verify = entry.verify if isinstance(entry, TargetEntry) else None
        if section == "issuers":
            self._issuer_findings(file, (section, name, kind), kind, config)
        propagation_timeout: timedelta | None = None
        nameservers: tuple[str, ...] | None = None
        follow_cname, resolvers = True, None
        if isinstance(entry, DnsProviderEntry):
            propagation_timeout, nameservers = _parsed(entry.propagation_timeout), entry.nameservers
            follow_cname, resolvers = entry.follow_cname, entry.resolvers
        sni: str | None = None
        verify_timeout: timedelta | None = None
        if isinstance(entry, TargetEntry):
            sni, verify_timeout = entry.sni, _parsed(entry.verify_timeout)
            self.target_dirs.extend(target_dirs(file, section, name, kind, config))
        merged[name] = DeclaredPlugin(
            name, kind, config, verify, ref, propagation_timeout, nameservers, sni, verify_timeout,
            follow_cname, resolvers,
        )  # fmt: skip

    def _issuer_findings(self, file: str, path: tuple[PathElement, ...], kind: str, config: BaseModel) -> None:
        """The kind's own rules over its configuration (``config_findings``), paths relative to it."""
        findings = issuer_hook(kind, "config_findings")
        if findings is None:
            return
        for where, code, message, hint in findings(config):
            self.add(NodeRef(file, (*path, *where)), code, f"{format_path(path)}: {message}", hint)

    # -- policy

    def _policy(self, patterns: Sequence[tuple[str, NodeRef]]) -> tuple[str, ...]:
        normalised: list[str] = []
        for raw, ref in patterns:
            try:
                normalised.append(normalize_domain(raw))
            except DomainNameError as exc:
                self.add(
                    ref,
                    exc.code,
                    f"allowed domain pattern: {exc}",
                    "write a name (example.com) or a wildcard pattern (*.example.com)",
                )
        return tuple(sorted(set(normalised)))

    # -- certificates
