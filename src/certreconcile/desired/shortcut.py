"""The checker's shortcut for a certificate with nothing to report (almost every one of a large directory).

:class:`~certreconcile.desired.checker.Checker` checks a certificate in a dozen steps, each able to record
an issue. :class:`PlainCertificates` answers in one pass whether none of them would: its names already in
normal form and each once, its targets each once and declared, its ``renew_before`` already read, its
issuer (and its key type, lifetime and challenge), DNS provider and policy in order. Each condition is the
negation of one of the checker's checks; when any does not hold it says nothing (``None``) and the checker
runs them all, so what is reported never depends on the shortcut (``tests/unit/desired`` compare both).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from itertools import repeat

from certreconcile.desired.declarations import DeclaredCertificate, DeclaredPlugin, NodeRef
from certreconcile.desired.documents import CertificateDocument
from certreconcile.desired.kinds import key_types, uses_challenges
from certreconcile.desired.model import Challenge
from certreconcile.domain.durations import RenewBefore
from certreconcile.domain.keys import KeyType
from certreconcile.domain.names import MAX_NAMES_PER_CERTIFICATE, is_wildcard

__all__ = ["PLAIN_NAME_STRICT", "PlainCertificates"]

# A name already in normal form: lower-case LDH labels, an optional leading wildcard, at most 253
# characters, no "--" (neither punycode nor a reserved label), a last label not all digits, no line break.
PLAIN_NAME_STRICT = re.compile(
    r"(?=.{1,253}\Z)(?!.*--)(?!.*\.[0-9]+\Z)"
    r"(?:\*\.)?(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z"
)

_DEFAULT_RENEW_BEFORE = RenewBefore()


class PlainCertificates:
    """Built once the plugins and the policy are merged, when nothing failed the schema and every
    reference can be checked (the checker's ``complete``)."""

    def __init__(
        self,
        issuers: Mapping[str, DeclaredPlugin],
        lifetime: Callable[[DeclaredPlugin], timedelta | None],
        targets: frozenset[str],
        dns_providers: Mapping[str, DeclaredPlugin],
        renew_before: Mapping[str, RenewBefore],
        allowed: tuple[frozenset[str], tuple[str, ...]] | None,
    ) -> None:
        # per issuer: the key types it signs (None: any), its lifetime, and whether it uses challenges
        self._issuers: dict[str, tuple[frozenset[KeyType] | None, timedelta | None, bool]] = {
            name: (key_types(issuer.kind), lifetime(issuer), uses_challenges(issuer.kind))
            for name, issuer in issuers.items()
        }
        self._targets = targets
        self._dns_providers = dns_providers
        self._renew_before = renew_before  # the checker's cache: only texts it read without an error
        self._allowed = allowed  # (exact names, wildcard suffixes); None: any name

    def declare(self, cert: CertificateDocument, ref: NodeRef) -> DeclaredCertificate | None:
        """The declaration the checker would make, when it would report nothing; else None (check it all)."""
        domains, targets = cert.domains, cert.targets
        if (
            len(domains) > MAX_NAMES_PER_CERTIFICATE
            or not all(map(PLAIN_NAME_STRICT.match, domains))
            or len(set(domains)) != len(domains)
            or (len(targets) > 1 and len(set(targets)) != len(targets))
            or not self._targets.issuperset(targets)
            or (cert.dns_provider is not None and cert.dns_provider not in self._dns_providers)
            or not self._allows(domains)
        ):
            return None
        renew_before = _DEFAULT_RENEW_BEFORE if cert.renew_before is None else self._renew_before.get(cert.renew_before)
        facts = self._issuers.get(cert.issuer)
        if renew_before is None or facts is None:
            return None  # a renew_before not read yet (or wrong), an issuer not declared
        supported, lifetime, challenges = facts
        challenge = cert.challenge if cert.challenge is not None else (Challenge.HTTP_01 if challenges else None)
        if (
            (supported is not None and cert.key not in supported)
            or (lifetime is not None and renew_before.duration is not None and renew_before.duration >= lifetime)
            or (challenge is Challenge.HTTP_01 and any(map(is_wildcard, domains)))
            or (challenge is Challenge.DNS_01 and cert.dns_provider is None)
        ):
            return None
        return DeclaredCertificate(cert, domains, renew_before, ref)

    def _allows(self, domains: tuple[str, ...]) -> bool:
        """Every name allowed by the policy (each an allowed name or below an allowed wildcard)."""
        if self._allowed is None:
            return True
        exact, suffixes = self._allowed
        return all(map(str.endswith, domains, repeat(suffixes))) or all(
            name in exact or name.endswith(suffixes) for name in domains
        )
