"""Runs every check of ``certreconcile check`` over the declarations (see the package docstring)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TypeVar, cast

from certreconcile.actual.store import StateStore
from certreconcile.crypto.envelope import check_round_trip
from certreconcile.desired.kinds import uses_challenges
from certreconcile.desired.model import AGENT_TARGET_KIND, CertificateSpec, DesiredState
from certreconcile.domain.policy import Challenge
from certreconcile.errors import CertReconcileError
from certreconcile.http01_check import Http01SelfCheckable
from certreconcile.plugins.ports import NO_CHECK, Dns01Provider, Issuer, SupportsCheck
from certreconcile.plugins.registry import (
    PluginContext,
    create_dns_provider,
    create_issuer,
    create_kms,
    create_target,
)
from certreconcile.preflight.challenges import challenge_for, check_dns01, check_http01
from certreconcile.preflight.report import CheckOutcome, CheckReport, CheckResult, attempt, failed
from certreconcile.preflight.staging import EphemeralKms, MemoryAcmeStore, order_from_staging

__all__ = ["CheckOptions", "run_checks"]

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class CheckOptions:
    names: tuple[str, ...] = ()  # empty: every declared certificate
    http01_base_url: str | None = None  # fetch HTTP-01 tokens here instead of http://<domain>
    order_staging: bool = False


def _plugin_check(subject: str, plugin: object) -> CheckResult:
    check = getattr(plugin, "check", None)
    if not callable(check):
        return CheckResult(subject, "credentials", CheckOutcome.SKIPPED, NO_CHECK)
    return attempt(subject, "credentials", cast(SupportsCheck, plugin).check)


def _selected(desired: DesiredState, names: tuple[str, ...]) -> list[CertificateSpec]:
    unknown = [name for name in names if name not in desired.certificates]
    if unknown:
        raise CertReconcileError(
            f"not declared: {', '.join(unknown)}",
            code="name-unknown",
            hint="check takes names of declared certificates",
        )
    return [spec for name, spec in desired.certificates.items() if not names or name in names]


def _make(results: list[CheckResult], subject: str, check: str, factory: Callable[[], _T]) -> _T | None:
    """Build a plug-in for its check; a plug-in that cannot be built fails that check (one line), not the command."""
    outcome: list[_T] = []

    def build() -> str:
        outcome.append(factory())
        return ""

    result = attempt(subject, check, build)
    if result.outcome is CheckOutcome.FAILED:
        results.append(result)
        return None
    return outcome[0]


class _Checker:
    def __init__(self, desired: DesiredState, context: PluginContext, options: CheckOptions, now: datetime) -> None:
        self.desired = desired
        self.context = context
        self.options = options
        self.now = now
        self.results: list[CheckResult] = []
        self.dns: dict[str, Dns01Provider] = {}

    def kms(self) -> None:
        subject = f"kms {self.desired.kms.kind}"
        spec = replace(self.desired.kms, cache=None)  # every check asks the KMS itself
        kms = _make(self.results, subject, "credentials", functools.partial(create_kms, spec, self.context))
        if kms is None:
            return
        check = getattr(kms, "check", None)
        action = check if callable(check) else lambda: check_round_trip(kms)
        self.results.append(attempt(subject, "credentials", action))

    def providers(self, specs: list[CertificateSpec]) -> None:
        for name in sorted({spec.dns_provider for spec in specs if spec.dns_provider}):
            spec = self.desired.dns_providers.get(name)
            if spec is None:
                continue
            subject = f"dns_provider {name}"
            make = functools.partial(create_dns_provider, spec, self.context)
            provider = _make(self.results, subject, "credentials", make)
            if provider is not None:
                self.dns[name] = provider
                self.results.append(_plugin_check(subject, provider))

    def _issuer(self, name: str) -> Issuer:
        """An issuer with a throwaway store and KMS: nothing it does is kept (no account, no CA key)."""
        store = cast(StateStore, MemoryAcmeStore())
        return create_issuer(self.desired.issuers[name], self.context, store, EphemeralKms())

    def issuers(self, specs: list[CertificateSpec]) -> None:
        """Each issuer's own check (ACME: its directory answers), made with a throwaway store and KMS."""
        for name in sorted({spec.issuer for spec in specs}):
            subject = f"issuer {name}"
            issuer = _make(self.results, subject, "reachable", functools.partial(self._issuer, name))
            if issuer is not None:
                self.results.append(replace(_plugin_check(subject, issuer), check="reachable"))

    def targets(self, specs: list[CertificateSpec]) -> None:
        for name in sorted({target for spec in specs for target in spec.targets}):
            target_spec = self.desired.targets[name]
            subject = f"target {name}"
            if target_spec.kind == AGENT_TARGET_KIND:
                why = "served by an agent: the agent checks its own host"
                self.results.append(CheckResult(subject, "test command", CheckOutcome.SKIPPED, why))
                continue
            make_target = functools.partial(create_target, target_spec, self.context)
            target = _make(self.results, subject, "test command", make_target)
            if target is not None:
                self.results.append(replace(_plugin_check(subject, target), check="test command"))

    def certificate(self, spec: CertificateSpec) -> None:
        subject = f"certificate {spec.name}"
        issuer_kind = self.desired.issuers[spec.issuer].kind
        challenges = uses_challenges(issuer_kind)
        dns_domains = tuple(d for d in spec.domains if challenge_for(spec, d, challenges) is Challenge.DNS_01)
        http_domains = tuple(d for d in spec.domains if challenge_for(spec, d, challenges) is Challenge.HTTP_01)
        if not challenges:
            why = f"issuer {spec.issuer} ({issuer_kind}) validates no ACME challenge"
            self.results.append(CheckResult(subject, "challenge", CheckOutcome.SKIPPED, why))
        if dns_domains:
            self._dns01(subject, spec, dns_domains)
        if http_domains:
            self._http01(subject, spec, http_domains)
        if self.options.order_staging:
            self._staging(subject, spec, challenges)

    def _dns01(self, subject: str, spec: CertificateSpec, domains: tuple[str, ...]) -> None:
        provider = self.dns.get(spec.dns_provider or "")
        if provider is None:
            failure = CertReconcileError(f"{spec.name} needs dns-01 but its dns_provider could not be made",
                                         code="acme-dns-provider-missing")  # fmt: skip
            self.results.append(failed(subject, "dns-01", failure))
            return
        self.results.append(attempt(subject, "dns-01", lambda: check_dns01(self.desired, spec, provider, domains)))

    def _http01(self, subject: str, spec: CertificateSpec, domains: tuple[str, ...]) -> None:
        # the issuer is only asked for its solver: no directory read, no account
        issuer = _make(self.results, subject, "http-01", functools.partial(self._issuer, spec.issuer))
        if issuer is None:
            return
        if not hasattr(issuer, "http01_solver"):
            why = "the issuer has no HTTP-01 solver"
            self.results.append(CheckResult(subject, "http-01", CheckOutcome.SKIPPED, why))
            return
        solver = cast(Http01SelfCheckable, issuer).http01_solver
        for domain in domains:
            check = f"http-01 {domain}"
            action = functools.partial(check_http01, solver, domain, self.options.http01_base_url)
            self.results.append(attempt(subject, check, action))

    def _staging(self, subject: str, spec: CertificateSpec, challenges: bool) -> None:
        if not challenges:
            self.results.append(CheckResult(subject, "staging order", CheckOutcome.SKIPPED, "not an ACME issuer"))
            return
        context = replace(self.context, dns_providers=self.dns)
        order = lambda: order_from_staging(self.desired, spec, context, self.now)  # noqa: E731
        self.results.append(attempt(subject, "staging order", order))


def run_checks(
    desired: DesiredState, context: PluginContext, options: CheckOptions, now: datetime
) -> CheckReport:
    """Every check for the selected certificates and the plug-ins they use; the state database is not opened."""
    specs = _selected(desired, options.names)
    checker = _Checker(desired, context, options, now)
    checker.kms()
    checker.issuers(specs)
    checker.providers(specs)
    checker.targets(specs)
    for spec in specs:
        checker.certificate(spec)
    return CheckReport(tuple(checker.results))

