"""The checker's state, and the checks of what a certificate names: its issuer (key type, lifetime),
targets and DNS provider must be declared; its domains must be allowed by the policy.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from certreconcile.desired.checks import TargetDir
from certreconcile.desired.declarations import Declarations, DeclaredPlugin, Issue, NodeRef
from certreconcile.desired.documents import CertificateDocument
from certreconcile.desired.kinds import issuer_hook, key_types
from certreconcile.domain.durations import RenewBefore, format_duration

__all__ = ["CheckerBase", "declared"]


class CheckerBase:
    """What every check records into (the issues, the merged declarations) and the reference checks."""

    def __init__(self, issues: list[Issue], complete: bool, directory: Path | None = None) -> None:
        self.issues = issues
        self.complete = complete
        self.directory = directory
        self.target_dirs: list[TargetDir] = []
        self.result = Declarations()
        self._renew_cache: dict[str, RenewBefore] = {}
        self._lifetimes: dict[str, timedelta | None] = {}
        self._allowed: tuple[frozenset[str], tuple[str, ...]] = (frozenset(), ())

    def add(self, ref: NodeRef, code: str, message: str, hint: str = "", related: NodeRef | None = None) -> None:
        self.issues.append(Issue(ref, code, message, hint, related))

    def _lifetime(self, issuer: DeclaredPlugin) -> timedelta | None:
        """The lifetime the issuer gives its certificates, when its kind says (``certificate_lifetime``)."""
        if issuer.name not in self._lifetimes:
            lifetime = issuer_hook(issuer.kind, "certificate_lifetime")  # None when invalid: reported on the issuer
            self._lifetimes[issuer.name] = lifetime(issuer.config) if lifetime is not None else None
        return self._lifetimes[issuer.name]

    def _references(
        self, cert: CertificateDocument, ref: NodeRef, domains: list[str], indexes: list[int], renew_before: RenewBefore
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
        if issuer is None:
            self.add(
                ref.child("issuer"),
                "unknown-issuer",
                f"certificate {cert.name!r} names the issuer {cert.issuer!r}, which is not declared",
                declared("issuers", self.result.issuers),
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
        for index, target in enumerate(cert.targets):
            if target not in self.result.targets:
                self.add(
                    ref.child("targets", index),
                    "unknown-target",
                    f"certificate {cert.name!r} names the target {target!r}, which is not declared",
                    declared("targets", self.result.targets),
                )
                failed = True
        if cert.dns_provider is not None and cert.dns_provider not in self.result.dns_providers:
            self.add(
                ref.child("dns_provider"),
                "unknown-dns-provider",
                f"certificate {cert.name!r} names the DNS provider {cert.dns_provider!r}, which is not declared",
                declared("dns_providers", self.result.dns_providers),
            )
            failed = True
        return failed

    def _domains_allowed(self, ref: NodeRef, domains: list[str], indexes: list[int]) -> bool:
        failed = False
        allowed = self.result.allowed_domains
        if allowed:
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


def declared(section: str, merged: dict[str, DeclaredPlugin]) -> str:
    if not merged:
        return f"declare it under {section}"
    return f"declared {section}: {', '.join(sorted(merged))}"
