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
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from certreconcile import engine
from certreconcile.actual.store import StateStore
from certreconcile.apply.executor import ApplyEnvironment, ChangeRunner
from certreconcile.clock import Clock, SystemClock
from certreconcile.desired.model import CertificateSpec, DesiredState, OnDelete
from certreconcile.domain.durations import RenewBefore
from certreconcile.domain.keys import KeyType
from certreconcile.domain.names import normalize_domain
from certreconcile.errors import CertReconcileError
from certreconcile.plan.destroy import DEFAULT_DESTROY_THRESHOLD
from certreconcile.plan.plan import Action, Change, Plan, Reason, ReasonCode
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
        challenge_dir: Path | None = None,
        challenge_base_url: str | None = None,
    ) -> None:
        self.db = db
        self.kms = kms_client
        self.acme: Mapping[str, Issuer] = (
            dict(acme_client) if isinstance(acme_client, Mapping) else {acme_client.name: acme_client}
        )
        self.targets = dict(targets or {})
        self.clock = clock or SystemClock()
        self.actor = actor
        self._desired = desired
        self.challenge_dir = challenge_dir
        self.challenge_base_url = challenge_base_url

    @classmethod
    def from_directory(
        cls, directory: Path, clock: Clock | None = None, environ: Mapping[str, str] | None = None
    ) -> CertificateManager:
        """A manager wired from a desired-state directory, like the CLI (``environ``: the process environment)."""
        from certreconcile.desired import load_desired
        from certreconcile.wiring import build_environment, open_store

        desired = load_desired(directory)
        settings = Settings.from_env(directory, environ)
        store = open_store(settings)
        env = build_environment(desired, settings, store, clock or SystemClock())
        return cls(store, env.kms, env.issuers, targets=env.targets, clock=env.clock, actor=env.actor, desired=desired)

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
            from dataclasses import replace

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

    def _run(self, change: Change, spec: CertificateSpec) -> CertificateRecord:
        desired = self._desired_with(spec)
        with self.db.session() as session:
            run_id = session.start_run(desired.git_commit, change.idempotency_key, self.clock.now())
            result = ChangeRunner(session, desired, self._environment(), run_id).run(change)
            session.finish_run(run_id, "success" if result.outcome == "done" else result.outcome, self.clock.now())
            if result.outcome != "done" and result.cert_id is None:
                raise CertReconcileError(f"{change.name}: {result.message}", code="manager-failed")
            session.bump_serial()
        return self._record(change.name)

    # --- the seed's interface -----------------------------------------------------
    def issue_certificate(self, domains: list[str], acme_provider: str = "letsencrypt") -> CertificateRecord:
        """Issue a new certificate for the given domains (primary + SANs) from the named issuer."""
        if acme_provider not in self.acme:
            raise CertReconcileError(
                f"no issuer named {acme_provider!r}",
                code="issuer-unknown",
                hint="available: " + ", ".join(sorted(self.acme)),
            )
        if not domains:
            raise CertReconcileError("issue_certificate needs at least one domain", code="domains-empty")
        normalized = tuple(dict.fromkeys(normalize_domain(d) for d in domains))
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
            domains=normalized,
            issuer=acme_provider,
            key_type=spec.key_type.value,
            targets=(),
            idempotency_key=f"manager-issue-{name}-{self.clock.now().timestamp()}",
        )
        return self._run(change, spec)

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
        """Replace a certificate: a new key pair, issue, distribute, verify; the old one is superseded."""
        spec, name, fingerprint = self._spec_for_id(cert_id)
        change = Change(
            action=Action.ROTATE,
            name=name,
            reasons=(Reason(ReasonCode.FORCED, "requested"),),
            domains=spec.domains,
            issuer=spec.issuer,
            key_type=spec.key_type.value,
            targets=spec.targets,
            replaces=cert_id,
            replaces_fingerprint=fingerprint,
            idempotency_key=f"manager-rotate-{cert_id}",
            forced=True,
        )
        return self._run(change, spec)

    def validate_acme_challenge(self, domain: str, token: str, key_authorization: str | None = None) -> bool:
        """HTTP-01: write the token file under ``challenge_dir`` and check it is served.

        The file is ``<challenge_dir>/.well-known/acme-challenge/<token>``. With
        ``challenge_base_url`` the check fetches it over HTTP (Host: domain), as the CA
        would; otherwise it reads the file back.
        """
        if self.challenge_dir is None:
            raise CertReconcileError(
                "validate_acme_challenge needs a challenge_dir (the web root)", code="challenge-dir-missing"
            )
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", token):
            raise CertReconcileError("an ACME token is base64url characters only", code="challenge-token-invalid")
        body = key_authorization or token
        path = self.challenge_dir / ".well-known" / "acme-challenge" / token
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
        if self.challenge_base_url is None:
            return path.read_text() == body
        url = f"{self.challenge_base_url.rstrip('/')}/.well-known/acme-challenge/{token}"
        if not url.startswith(("http://", "https://")):
            raise CertReconcileError("challenge_base_url must be http:// or https://", code="challenge-url-invalid")
        request = urllib.request.Request(url, headers={"Host": normalize_domain(domain)})  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
                return bool(response.status == 200 and response.read().decode().strip() == body)
        except OSError:
            return False

    def distribute_certificate(self, cert_id: str, targets: list[str]) -> None:
        """Push certificate and key to each named target, reload, verify by observation, audit."""
        unknown = [t for t in targets if t not in self.targets]
        if unknown:
            raise CertReconcileError(
                f"unknown target(s): {', '.join(unknown)}",
                code="target-unknown",
                hint="available: " + ", ".join(sorted(self.targets)),
            )
        spec, name, fingerprint = self._spec_for_id(cert_id)
        spec = CertificateSpec(
            name=spec.name,
            domains=spec.domains,
            issuer=spec.issuer,
            key_type=spec.key_type,
            renew_before=spec.renew_before,
            targets=tuple(sorted(set(spec.targets) | set(targets))),
            on_delete=spec.on_delete,
        )
        change = Change(
            action=Action.REDISTRIBUTE,
            name=name,
            reasons=(Reason(ReasonCode.TARGET_ADDED, "requested"),),
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
            result = ChangeRunner(session, desired, self._environment(), run_id).redistribute(change)
            session.finish_run(run_id, result.outcome, self.clock.now())
        if result.outcome == "failed":
            raise CertReconcileError(f"{name}: {result.message}", code="distribution-failed")
