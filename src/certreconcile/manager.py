"""``CertificateManager``: the seed's Python interface, a facade over the same engine.

    manager = CertificateManager.from_directory(Path("certs"))
    record = manager.issue_certificate(["shop.example.com", "www.shop.example.com"], acme_provider="internal")
    manager.distribute_certificate(record.id, ["deploy-dir"])
    new = manager.rotate_certificate(record.id)

Every call goes through the executor's steps: the key is generated and sealed by the KMS,
the certificate stored, the audit log appended, targets verified. :meth:`CertificateManager.plan`
is :func:`certreconcile.engine.plan` over :func:`certreconcile.engine.gather`, as for the CLI and ``run``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import cast

from certreconcile import engine
from certreconcile.actual.store import StateStore
from certreconcile.apply.executor import ApplyEnvironment, ChangeResult, ChangeRunner
from certreconcile.clock import Clock, SystemClock
from certreconcile.desired.model import CertificateSpec, DesiredState, OnDelete
from certreconcile.domain.durations import RenewBefore
from certreconcile.domain.keys import KeyType
from certreconcile.domain.names import matches_allowed, normalize_domain
from certreconcile.domain.policy import Origin
from certreconcile.errors import CertReconcileError, PolicyViolation, TargetFailed, VerificationFailed
from certreconcile.http01_check import Http01SelfCheckable, check_token, self_check
from certreconcile.plan.budget import rate_limit_diagnostics
from certreconcile.plan.destroy import DEFAULT_DESTROY_THRESHOLD
from certreconcile.plan.plan import Action, Change, Plan, Reason, ReasonCode, Severity, Trigger
from certreconcile.plugins.ports import Issuer, Kms, Target
from certreconcile.wiring import Settings

__all__ = ["CertificateManager", "CertificateRecord"]


@dataclass
class CertificateRecord:
    """As in the seed. ``key_ref`` is the KMS envelope (ciphertext JSON), never the key."""

    id: str
    domain: str
    san_domains: list[str]
    not_after: datetime
    status: str
    fingerprint: str
    key_ref: str


def _name_for(primary: str) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", primary.replace("*.", "wildcard.").lower()).strip("-")
    return slug[:63].rstrip("-")


class CertificateManager:
    def __init__(
        self,
        db: StateStore,
        kms_client: Kms,
        acme_client: Issuer | Mapping[str, Issuer],
        *,
        targets: Mapping[str, Target] | None = None,
        clock: Clock | None = None,
        actor: str = "user:certificate-manager",
        desired: DesiredState | None = None,
        allowed_domains: Sequence[str] | None = None,
        challenge_base_url: str | None = None,
    ) -> None:
        """``allowed_domains``: the policy (default: the declarations', else any name). ``challenge_base_url``:
        where validate_acme_challenge fetches instead of ``http://<domain>`` (explicit; tests use 127.0.0.1)."""
        self.db = db
        self.kms = kms_client
        self.acme: Mapping[str, Issuer] = (
            dict(acme_client) if isinstance(acme_client, Mapping) else {acme_client.name: acme_client}
        )
        self.targets = dict(targets or {})
        self.clock = clock or SystemClock()
        self.actor = actor
        self._desired = desired
        if allowed_domains is None:
            self.allowed_domains = desired.allowed_domains if desired is not None else ()
        else:
            self.allowed_domains = tuple(normalize_domain(pattern) for pattern in allowed_domains)
        self.challenge_base_url = challenge_base_url

    @classmethod
    def from_directory(
        cls,
        directory: Path,
        clock: Clock | None = None,
        environ: Mapping[str, str] | None = None,
        *,
        challenge_base_url: str | None = None,
    ) -> CertificateManager:
        """A manager wired from a desired-state directory, like the CLI (``environ``: the process environment)."""
        from certreconcile.desired import load_desired
        from certreconcile.wiring import build_environment, open_store

        desired = load_desired(directory)
        settings = Settings.from_env(directory, environ)
        store = open_store(settings)
        env = build_environment(desired, settings, store, clock or SystemClock())
        return cls(
            store,
            env.kms,
            env.issuers,
            targets=env.targets,
            clock=env.clock,
            actor=env.actor,
            desired=desired,
            challenge_base_url=challenge_base_url,
        )

    # --- the engine's plan --------------------------------------------------------
    def plan(self, *, settings: Settings | None = None) -> Plan:
        """What an ``apply`` of the loaded declarations would change now: the engine's plan, as the CLI computes it.

        ``settings`` adds the KMS-drift warnings ``plan`` gives (and its destroy threshold).
        """
        if self._desired is None:
            raise CertReconcileError(
                "plan() needs the declarations", code="desired-missing", hint="build the manager with from_directory()"
            )
        now = self.clock.now()
        gathered = engine.gather(self._desired, self.db, now, settings=settings)
        threshold = settings.destroy_threshold if settings is not None else DEFAULT_DESTROY_THRESHOLD
        return engine.plan(gathered, now, destroy_threshold=threshold)

    # --- helpers -------------------------------------------------------------------
    def _environment(self) -> ApplyEnvironment:
        return ApplyEnvironment(
            store=self.db, kms=self.kms, issuers=self.acme, targets=self.targets, clock=self.clock, actor=self.actor
        )

    def _desired_with(self, spec: CertificateSpec) -> DesiredState:
        """The declarations the engine sees: the loaded ones (if any) with this certificate in them."""
        base = self._desired
        certificates = dict(base.certificates) if base else {}
        certificates[spec.name] = spec
        if base is not None:
            return replace(base, certificates=certificates)
        from pydantic import BaseModel

        from certreconcile.desired.model import IssuerSpec, KmsSpec, TargetSpec

        class _Opaque(BaseModel):
            pass

        issuers = {
            name: IssuerSpec(name=name, kind="external", config=_Opaque(), fingerprint=name) for name in self.acme
        }
        targets = {
            name: TargetSpec(name=name, kind="external", config=_Opaque(), fingerprint=name) for name in self.targets
        }
        return DesiredState(
            kms=KmsSpec(name="kms", kind=self.kms.name, config=_Opaque(), fingerprint=""),
            issuers=issuers,
            dns_providers={},
            targets=targets,
            allowed_domains=(),
            certificates=certificates,
            digest="manager",
        )

    def _record(self, name: str) -> CertificateRecord:
        with self.db.session() as session:
            current = session.current_certificate(name)
            if current is None:
                raise CertReconcileError(f"no certificate named {name!r}", code="name-unknown")
            key_ref = session.key_ref(current.id)
        return CertificateRecord(
            id=current.id,
            domain=current.domains[0],
            san_domains=list(current.domains[1:]),
            not_after=current.not_after,
            status=current.status.value,
            fingerprint=current.fingerprint,
            key_ref=key_ref.envelope_json,
        )

    def _run(self, change: Change, spec: CertificateSpec) -> ChangeResult:
        desired = self._desired_with(spec)
        with self.db.session() as session:
            run_id = session.start_run(desired.git_commit, change.idempotency_key, self.clock.now())
            runner = ChangeRunner(session, desired, self._environment(), run_id, origin=Origin.API)
            result = runner.run(change)
            session.finish_run(run_id, "success" if result.outcome == "done" else result.outcome, self.clock.now())
            if result.outcome != "done" and result.cert_id is None:
                raise CertReconcileError(f"{change.name}: {result.message}", code="manager-failed")
            session.bump_serial()
        return result

    def _failures(self, name: str, cert_id: str, targets: tuple[str, ...]) -> dict[str, str]:
        """Each of ``targets`` not verified with ``cert_id``, with its recorded error."""
        with self.db.session() as session:
            current = session.current_certificate(name)
        distributions = current.distributions if current is not None and current.id == cert_id else {}
        failures = {}
        for target in targets:
            state = distributions.get(target)
            if state is None or state.verified_at is None or state.fingerprint != (current and current.fingerprint):
                failures[target] = (state.last_error if state is not None else None) or "not verified"
        return failures

    # --- policy and budgets ----------------------------------------------------------
    def _check_policy(self, domains: tuple[str, ...]) -> None:
        """Every name inside policy.allowed_domains (as validation checks declarations), before any issuance."""
        allowed = self.allowed_domains
        outside = [name for name in domains if allowed and not matches_allowed(name, allowed)]
        if outside:
            raise PolicyViolation(
                f"{', '.join(repr(name) for name in outside)} outside policy.allowed_domains",
                code="domain-not-allowed",
                hint=f"allowed: {', '.join(allowed)}",
            )

    def _check_budget(self, change: Change, spec: CertificateSpec) -> None:
        """The CA budgets (Let's Encrypt rate limits) over this change and the recent history, as plan counts them."""
        desired = self._desired_with(spec)
        with self.db.session() as session:
            actual = session.load_actual()
        for diagnostic in rate_limit_diagnostics(desired, actual, (change,), self.clock.now()):
            if diagnostic.severity is Severity.ERROR:
                raise PolicyViolation(diagnostic.summary, code=diagnostic.code, hint=diagnostic.hint)

    # --- the seed's interface -----------------------------------------------------
    def issue_certificate(self, domains: list[str], acme_provider: str = "letsencrypt") -> CertificateRecord:
        """Issue a new certificate for the given domains (primary + SANs) from the named issuer.

        Raises :class:`PolicyViolation` (nothing issued) for a name outside policy.allowed_domains or a CA
        budget exceeded, :class:`TargetFailed` never (it distributes nowhere). The certificate is owned by
        the API: an apply of declarations that do not name it leaves it alone.
        """
        if acme_provider not in self.acme:
            raise CertReconcileError(
                f"no issuer named {acme_provider!r}",
                code="issuer-unknown",
                hint="available: " + ", ".join(sorted(self.acme)),
            )
        if not domains:
            raise CertReconcileError("issue_certificate needs at least one domain", code="domains-empty")
        normalized = tuple(dict.fromkeys(normalize_domain(d) for d in domains))
        self._check_policy(normalized)
        name = _name_for(normalized[0])
        spec = CertificateSpec(
            name=name,
            domains=normalized,
            issuer=acme_provider,
            key_type=KeyType.ECDSA_P256,
            renew_before=RenewBefore(),
            targets=(),
            on_delete=OnDelete.RETIRE,
        )
        with self.db.session() as session:
            if session.current_certificate(name) is not None:
                raise CertReconcileError(
                    f"{name} already has a certificate",
                    code="already-issued",
                    hint="use rotate_certificate(cert_id) to replace it",
                )
        change = Change(
            action=Action.ISSUE,
            name=name,
            reasons=(Reason(ReasonCode.NEW_CERTIFICATE, "requested"),),
            trigger=Trigger.MANUAL,
            domains=normalized,
            issuer=acme_provider,
            key_type=spec.key_type.value,
            targets=(),
            idempotency_key=f"manager-issue-{name}-{self.clock.now().timestamp()}",
        )
        self._check_budget(change, spec)
        self._run(change, spec)
        return self._record(name)

    def _spec_for_id(self, cert_id: str) -> tuple[CertificateSpec, str, str]:
        with self.db.session() as session:
            found = [cert for cert in session.load_actual().certificates.values() if cert.id == cert_id]
            if not found:
                raise CertReconcileError(
                    f"no current certificate has id {cert_id}",
                    code="cert-unknown",
                    hint="see `certreconcile status --format json` for ids",
                )
        cert = found[0]
        name = cert.name
        declared = self._desired.certificates.get(name) if self._desired else None
        spec = declared or CertificateSpec(
            name=name,
            domains=cert.domains,
            issuer=cert.issuer,
            key_type=cert.key_type,
            renew_before=RenewBefore(),
            targets=tuple(sorted(cert.distributions)),
            on_delete=cert.on_delete,
        )
        return spec, name, cert.fingerprint

    def rotate_certificate(self, cert_id: str) -> CertificateRecord:
        """Replace a certificate: a new key pair, issue, distribute, verify; the old one is superseded.

        Raises :class:`VerificationFailed` when the new certificate is not verified on every target: it is
        stored and deployed where it could be, the rotation stays open (the old one is not superseded).
        """
        spec, name, fingerprint = self._spec_for_id(cert_id)
        self._check_policy(spec.domains)
        change = Change(
            action=Action.ROTATE,
            name=name,
            reasons=(Reason(ReasonCode.FORCED, "requested"),),
            trigger=Trigger.MANUAL,
            domains=spec.domains,
            issuer=spec.issuer,
            key_type=spec.key_type.value,
            targets=spec.targets,
            replaces=cert_id,
            replaces_fingerprint=fingerprint,
            idempotency_key=f"manager-rotate-{cert_id}",
            forced=True,
        )
        self._check_budget(change, spec)
        result = self._run(change, spec)
        if result.outcome == "failed" and result.cert_id is not None:
            failures = self._failures(name, result.cert_id, spec.targets) or {"-": result.message}
            raise VerificationFailed(
                f"{name}: the new certificate {result.cert_id} is not verified on "
                + "; ".join(f"{target}: {error}" for target, error in sorted(failures.items())),
                failures,
                cert_id=result.cert_id,
                hint="the rotation stays open: fix the targets, then distribute_certificate() or rotate again",
            )
        return self._record(name)

    def validate_acme_challenge(self, domain: str, token: str, *, acme_provider: str | None = None) -> bool:
        """HTTP-01 self-check, as certbot's: serve the key authorization for ``token`` (the account key's)
        on the issuer's configured solver, fetch ``http://<domain>/.well-known/acme-challenge/<token>`` from
        outside, compare, clean up. True when the domain serves it; False otherwise.

        ``acme_provider``: the ACME issuer (default: the only one with HTTP-01). ``challenge_base_url`` (the
        constructor's) replaces ``http://<domain>`` for the fetch; the Host header stays the domain.
        """
        check_token(token)
        return self_check(self._http01_issuer(acme_provider), domain, token, base_url=self.challenge_base_url)

    def _http01_issuer(self, acme_provider: str | None) -> Http01SelfCheckable:
        capable = {
            name: issuer
            for name, issuer in self.acme.items()
            if hasattr(issuer, "key_authorization") and hasattr(issuer, "http01_solver")
        }
        if acme_provider is not None and acme_provider in capable:
            return cast(Http01SelfCheckable, capable[acme_provider])
        if acme_provider is None and len(capable) == 1:
            return cast(Http01SelfCheckable, next(iter(capable.values())))
        raise CertReconcileError(
            "validate_acme_challenge needs an ACME issuer with an HTTP-01 solver"
            + (f"; {acme_provider!r} is not one" if acme_provider is not None else ""),
            code="challenge-solver-missing",
            hint="ACME issuers with http01: " + (", ".join(sorted(capable)) or "none declared"),
        )

    def distribute_certificate(self, cert_id: str, targets: list[str]) -> None:
        """Push certificate and key to each named target, reload, verify by observation, audit.

        Raises :class:`TargetFailed` naming each requested target not verified (and its error); the
        others are deployed. A target that failed before never blocks a later distribute to other targets.
        """
        unknown = [t for t in targets if t not in self.targets]
        if unknown:
            raise CertReconcileError(
                f"unknown target(s): {', '.join(unknown)}",
                code="target-unknown",
                hint="available: " + ", ".join(sorted(self.targets)),
            )
        spec, name, fingerprint = self._spec_for_id(cert_id)
        spec = replace(spec, targets=tuple(sorted(set(spec.targets) | set(targets))))
        change = Change(
            action=Action.REDISTRIBUTE,
            name=name,
            reasons=(Reason(ReasonCode.TARGET_ADDED, "requested"),),
            trigger=Trigger.MANUAL,
            domains=spec.domains,
            issuer=spec.issuer,
            key_type=spec.key_type.value,
            targets=tuple(sorted(targets)),
            replaces=cert_id,
            replaces_fingerprint=fingerprint,
            idempotency_key=f"manager-distribute-{cert_id}",
        )
        desired = self._desired_with(spec)
        with self.db.session() as session:
            run_id = session.start_run(None, change.idempotency_key, self.clock.now())
            runner = ChangeRunner(session, desired, self._environment(), run_id, origin=Origin.API)
            result = runner.redistribute(change)
            session.finish_run(run_id, result.outcome, self.clock.now())
        # Only the requested targets decide: another target's old failure (the rotation it keeps open) does not.
        failures = self._failures(name, cert_id, change.targets)
        if failures:
            raise TargetFailed(
                f"{name}: not verified on " + "; ".join(f"{t}: {e}" for t, e in sorted(failures.items())),
                failures,
                hint="fix the targets named, then distribute to them again (the others are deployed)",
            )
