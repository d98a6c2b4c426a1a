"""The checks of one declared certificate: its names, renew_before, challenge and what it names.

A part of :class:`~certreconcile.desired.checker.Checker` (its base class), kept apart to keep files small.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta

from certreconcile.desired.agent_refs import is_agent_reference, reference_findings
from certreconcile.desired.checks import (
    certificate_findings,
)
from certreconcile.desired.declarations import (
    Declarations,
    DeclaredCertificate,
    DeclaredPlugin,
    NodeRef,
)
from certreconcile.desired.documents import (
    CertificateDocument,
)
from certreconcile.desired.kinds import issuer_hook, key_types, uses_challenges
from certreconcile.desired.model import Challenge
from certreconcile.desired.salvage import Unchecked
from certreconcile.domain.durations import RenewBefore, format_duration, parse_renew_before
from certreconcile.domain.names import (
    MAX_NAMES_PER_CERTIFICATE,
    DomainNameError,
    is_wildcard,
    normalize_domain,
)

__all__ = ["CertificateChecks"]


_DEFAULT_RENEW_BEFORE = RenewBefore()

# Names already in normalised form (lower-case LDH labels, optional leading wildcard, no
# "--": neither punycode nor reserved labels) are accepted without calling normalize_domain:
# same result, 20x faster.
_PLAIN_NAME = re.compile(r"^(?:\*\.)?(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


class CertificateChecks:
    """The per-certificate checks of the :class:`~certreconcile.desired.checker.Checker`."""

    result: Declarations
    complete: bool
    unchecked: Unchecked
    _renew_cache: dict[str, RenewBefore]
    _lifetimes: dict[str, timedelta | None]
    _allowed: tuple[frozenset[str], tuple[str, ...]]

    def add(self, ref: NodeRef, code: str, message: str, hint: str = "", related: NodeRef | None = None) -> None:
        raise NotImplementedError  # the Checker records the issue

    def _renew_before(self, text: str) -> RenewBefore:
        cached = self._renew_cache.get(text)
        if cached is None:
            cached = self._renew_cache[text] = parse_renew_before(text)
        return cached

    def _domains(self, cert: CertificateDocument, ref: NodeRef) -> tuple[Sequence[str], Sequence[int]] | None:
        """The normalised names and their indexes in ``domains``; None after reporting a problem."""
        plain = _PLAIN_NAME.match
        domains: list[str] = []
        indexes: list[int] = []
        seen: dict[str, int] = {}
        failed = False
        for index, raw in enumerate(cert.domains):
            if len(raw) <= 253 and plain(raw) and "--" not in raw and not raw.rpartition(".")[2].isdigit():
                name = raw  # already normalised (see _PLAIN_NAME)
            else:
                try:
                    name = normalize_domain(raw)
                except DomainNameError as exc:
                    self.add(
                        ref.child("domains", index),
                        exc.code,
                        str(exc),
                        exc.hint or "write a fully qualified name such as www.example.com or *.example.com",
                    )
                    failed = True
                    continue
            if name in seen:
                self.add(
                    ref.child("domains", index),
                    "duplicate-domain",
                    f"{raw!r} repeats domains[{seen[name]}] ({name})",
                    "list each name once",
                )
                failed = True
                continue
            seen[name] = index
            domains.append(name)
            indexes.append(index)
        if len(cert.domains) > MAX_NAMES_PER_CERTIFICATE:
            self.add(
                ref.child("domains"),
                "too-many-names",
                f"certificate {cert.name!r} has {len(cert.domains)} names; the limit is {MAX_NAMES_PER_CERTIFICATE}",
                "split the names over several certificates",
            )
            failed = True
        return None if failed else (domains, indexes)

    def _certificate(self, cert: CertificateDocument, ref: NodeRef) -> DeclaredCertificate | None:
        checked = self._domains(cert, ref)
        failed = checked is None
        if len(set(cert.targets)) < len(cert.targets):  # certificate_findings: a target listed twice
            for finding in certificate_findings(cert):
                self.add(ref.child(*finding.path), finding.code, finding.message, finding.hint)
                failed = True
        domains, indexes = checked if checked is not None else ((), ())

        renew_before = _DEFAULT_RENEW_BEFORE
        if cert.renew_before is not None:
            try:
                renew_before = self._renew_before(cert.renew_before)
            except ValueError as exc:
                self.add(
                    ref.child("renew_before"),
                    "invalid-renew-before",
                    str(exc),
                    "write a duration such as 30d or a percentage of the lifetime such as 33%",
                )
                failed = True

        challenge = cert.challenge
        if challenge is None:
            issuer = self.result.issuers.get(cert.issuer)
            if issuer is not None and uses_challenges(issuer.kind):
                challenge = Challenge.HTTP_01
        if challenge is Challenge.HTTP_01 and any(map(is_wildcard, domains)):
            for index, name in zip(indexes, domains, strict=True):
                if is_wildcard(name):
                    self.add(
                        ref.child("domains", index),
                        "wildcard-needs-dns01",
                        f"the wildcard {name!r} cannot be validated with http-01",
                        "set challenge: dns-01 and a dns_provider",
                    )
                    failed = True
        elif challenge is Challenge.DNS_01 and cert.dns_provider is None:
            self.add(
                ref.child("challenge"),
                "dns01-needs-provider",
                f"certificate {cert.name!r} uses dns-01 but names no dns_provider",
                "add dns_provider: <a name declared under dns_providers>",
            )
            failed = True

        if self.complete:
            failed |= self._references(cert, ref, domains, indexes, renew_before)
        if failed:
            return None
        return DeclaredCertificate(cert, tuple(domains), renew_before, ref)

    def _lifetime(self, issuer: DeclaredPlugin) -> timedelta | None:
        """The lifetime the issuer gives its certificates, when its kind says (``certificate_lifetime``)."""
        if issuer.name not in self._lifetimes:
            lifetime = issuer_hook(issuer.kind, "certificate_lifetime")  # None when invalid: reported on the issuer
            self._lifetimes[issuer.name] = lifetime(issuer.config) if lifetime is not None else None
        return self._lifetimes[issuer.name]

    def _references(
        self,
        cert: CertificateDocument,
        ref: NodeRef,
        domains: Sequence[str],
        indexes: Sequence[int],
        renew_before: RenewBefore,
    ) -> bool:
        """Check what ``cert`` names (issuer, targets, DNS provider, domains); True when any check failed."""
        checks = (
            self._issuer_reference(cert, ref, renew_before),
            self._plugin_references(cert, ref),
            self._domains_allowed(ref, domains, indexes),
        )
        return any(checks)

    def _issuer_reference(self, cert: CertificateDocument, ref: NodeRef, renew_before: RenewBefore) -> bool:
        failed = False
        issuer = self.result.issuers.get(cert.issuer)
        if issuer is None and self.unchecked.covers("issuers", cert.issuer):
            return True  # declared with schema errors (reported): nothing to check against
        if issuer is None:
            self.add(
                ref.child("issuer"),
                "unknown-issuer",
                f"certificate {cert.name!r} names the issuer {cert.issuer!r}, which is not declared",
                _declared("issuers", self.result.issuers),
            )
            failed = True
        else:
            supported = key_types(issuer.kind)
            if supported is not None and cert.key not in supported:
                self.add(
                    ref.child("key"),
                    "key-type-unsupported",
                    f"the {issuer.kind} issuer {issuer.name!r} cannot sign {cert.key.value} keys",
                    f"use one of: {', '.join(sorted(supported))}",
                )
                failed = True
            lifetime = self._lifetime(issuer)
            duration = renew_before.duration
            if lifetime is not None and duration is not None and duration >= lifetime:
                self.add(
                    ref.child("renew_before"),
                    "renew-before-too-long",
                    f"renew_before {cert.renew_before} is not shorter than the lifetime "
                    f"{format_duration(lifetime)} of issuer {issuer.name!r}: it would renew forever",
                    "use a shorter duration or a percentage such as 33%",
                )
                failed = True
        return failed

    def _plugin_references(self, cert: CertificateDocument, ref: NodeRef) -> bool:
        failed = False
        for finding in reference_findings(cert.name, cert.targets, self.result.agents):
            failed = True
            index = finding.path[1]
            target = cert.targets[index] if isinstance(index, int) else ""
            agent_broken = finding.code == "unknown-agent" and self.unchecked.covers("agents", target.split("/")[0])
            if not agent_broken and not self.unchecked.covers("targets", target):  # else: its schema error says
                self.add(ref.child(*finding.path), finding.code, finding.message, finding.hint)
        for index, target in enumerate(cert.targets):
            if self.unchecked.covers("targets", target):
                failed = True
            elif target not in self.result.targets and not is_agent_reference(target):
                self.add(
                    ref.child("targets", index),
                    "unknown-target",
                    f"certificate {cert.name!r} names the target {target!r}, which is not declared",
                    _declared("targets", self.result.targets),
                )
                failed = True
        if cert.dns_provider is not None and self.unchecked.covers("dns_providers", cert.dns_provider):
            failed = True
        elif cert.dns_provider is not None and cert.dns_provider not in self.result.dns_providers:
            self.add(
                ref.child("dns_provider"),
                "unknown-dns-provider",
                f"certificate {cert.name!r} names the DNS provider {cert.dns_provider!r}, which is not declared",
                _declared("dns_providers", self.result.dns_providers),
            )
            failed = True
        return failed

    def _domains_allowed(self, ref: NodeRef, domains: Sequence[str], indexes: Sequence[int]) -> bool:
        failed = False
        allowed = self.result.allowed_domains
        if allowed and not self.unchecked.policy:
            exact, suffixes = self._allowed
            for index, name in zip(indexes, domains, strict=True):
                # same answer as matches_allowed(name, allowed), without a Python loop
                if name not in exact and not name.endswith(suffixes):
                    self.add(
                        ref.child("domains", index),
                        "domain-not-allowed",
                        f"{name!r} is outside policy.allowed_domains",
                        f"allowed: {', '.join(allowed)}",
                    )
                    failed = True
        return failed




def _declared(section: str, merged: dict[str, DeclaredPlugin]) -> str:
    if not merged:
        return f"declare it under {section}"
    return f"declared {section}: {', '.join(sorted(merged))}"
