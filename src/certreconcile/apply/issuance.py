"""Issuance and rotation: a key (new, or resumed from the journal), the CA's certificate, stored, then deployed."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

from certreconcile.actual.journal_step import JournalState, JournalStep
from certreconcile.actual.model import ActualCertificate, OpenRotation
from certreconcile.actual.store import CertificateRow, JournalEntry
from certreconcile.apply.distribution import DistributionSteps
from certreconcile.apply.journalled_key import JournalledKey, discardable, journalled_key, odd_kms_error
from certreconcile.apply.order_journal import ChangeOrderJournal
from certreconcile.apply.results import ChangeResult, certificate_context
from certreconcile.audit.events import AuditAction
from certreconcile.crypto.envelope import key_ref_from_json, seal, unopenable
from certreconcile.crypto.keys import (
    build_csr,
    generate_private_key,
    load_private_key,
    private_key_pem,
    public_key_matches,
)
from certreconcile.desired.model import CertificateSpec
from certreconcile.domain.certs import CertFacts, read_cert_facts
from certreconcile.domain.keys import KeyRef, KeyType
from certreconcile.domain.policy import Origin
from certreconcile.domain.status import CertStatus
from certreconcile.errors import IssuerError, KmsError
from certreconcile.logcontext import log_context
from certreconcile.plan.plan import Action, Change
from certreconcile.plan.policies import renewal_time
from certreconcile.plugins.ports import DeployBundle, IssuedCertificate, IssueRequest, SecretBytes

__all__ = ["IssuanceSteps"]

log = logging.getLogger("certreconcile.apply")


class IssuanceSteps(DistributionSteps):
    """The issue and rotate steps of a change."""

    def _issue(self, change: Change, current: ActualCertificate | None) -> ChangeResult:
        spec = self.desired.certificates[change.name]
        now = self.env.clock.now()
        rotation_id = self._start_rotation(change, spec, current, now)
        cert_id, key_ref, key_pem, generated = self._key_for(change, spec.key_type, current)
        with log_context(step="issue", issuer=spec.issuer):
            log.debug("%s: requesting a certificate from %s", change.name, spec.issuer)
            issued, facts = self._request(change, spec, current, (cert_id, generated), key_pem, now)
            self._store_issued(change, spec, current, (issued, facts), cert_id, key_ref, rotation_id, now)
            log.info("%s: issued serial %s by %s", change.name, facts.serial_number, spec.issuer,
                     extra={"serial": facts.serial_number})  # fmt: skip
        bundle = DeployBundle(
            name=change.name,
            domains=spec.domains,
            cert_pem=issued.cert_pem,
            chain_pem=issued.chain_pem,
            key_pem=key_pem,
            fingerprint=facts.fingerprint,
        )
        serial = facts.serial_number
        what = f"{change.action.verb} serial {serial}"
        # The state is known (a new name, or the rotation opened or resumed here): activated with the deploy's rows.
        known = current is None or rotation_id is not None
        activation = (CertStatus.ISSUED, _replaced(current, rotation_id, cert_id, now)) if known else None
        with log_context(serial=serial):
            failed = self._deploy(change, cert_id, bundle, spec.targets, started_journalled=True, activation=activation)
            if known:
                return self._finish_issued(change, cert_id, failed, what, serial)
            return self._finish(change, cert_id, failed, what, serial=serial)

    def _start_rotation(
        self, change: Change, spec: CertificateSpec, current: ActualCertificate | None, now: datetime
    ) -> int | None:
        """A rotation opens (or resumes) a rotation row and moves the current certificate to ``rotating``."""
        if change.action is not Action.ROTATE or current is None:
            return None
        if current.open_rotation is not None and current.open_rotation.new_cert_id is None:
            rotation_id = current.open_rotation.rotation_id
        else:
            rotation_id = self.session.open_rotation(current.id, now)
        status = current.status
        if status is CertStatus.ACTIVE and now >= renewal_time(spec, current):
            self._move(current.id, status, CertStatus.EXPIRING_SOON)
            status = CertStatus.EXPIRING_SOON
        self._move(current.id, status, CertStatus.ROTATING)
        return rotation_id

    def _request(
        self,
        change: Change,
        spec: CertificateSpec,
        current: ActualCertificate | None,
        key: tuple[str, JournalEntry | None],
        key_pem: SecretBytes,
        now: datetime,
    ) -> tuple[IssuedCertificate, CertFacts]:
        """Ask the issuer for the certificate, then check it names the declared domains and our key.

        ``key``: the certificate id, and the ``key-generated`` step of a key made by this run (no order can
        exist for it), not written yet: it goes with this step's ``started``, in one statement, before the CA
        is asked. None: a key resumed from the journal.
        """
        cert_id, generated = key
        issuer = self.env.issuers[spec.issuer]
        private_key = load_private_key(key_pem)
        started = self._journal_entry(change, JournalStep.ISSUE, JournalState.STARTED, issuer=spec.issuer)
        if generated is not None:
            self.session.journal_many([generated, started])
        else:
            self.session.journal(started)
        new_key = generated is not None
        replaces_pem: str | None = None
        if current is not None and change.action is Action.ROTATE and current.issuer == spec.issuer:
            cached = self.env.leaf_pems.get(current.id) if self.env.leaf_pems is not None else None
            replaces_pem = cached if cached is not None else self.session.certificate_pems(current.id)[0]
        issued = issuer.issue(
            IssueRequest(
                name=change.name,
                domains=spec.domains,
                key_type=spec.key_type,
                csr_pem=build_csr(private_key, spec.domains),
                now=now,
                challenge=spec.challenge.value if spec.challenge is not None else None,
                dns_provider=spec.dns_provider,
                replaces_cert_pem=replaces_pem,
                journal=ChangeOrderJournal(self, change, cert_id, new_key=new_key),
            )
        )
        facts = read_cert_facts(issued.cert_pem)
        if set(facts.domains) != set(spec.domains):
            raise IssuerError(
                f"the CA issued a certificate for {', '.join(facts.domains)} instead of {', '.join(spec.domains)}",
                code="issuer-wrong-names",
            )
        if not public_key_matches(issued.cert_pem, private_key):
            raise IssuerError("the CA issued a certificate for another key", code="issuer-wrong-key")
        return issued, facts

    def _store_issued(
        self,
        change: Change,
        spec: CertificateSpec,
        current: ActualCertificate | None,
        result: tuple[IssuedCertificate, CertFacts],
        cert_id: str,
        key_ref: KeyRef,
        rotation_id: int | None,
        now: datetime,
    ) -> None:
        """Store the new certificate (status ``issued``), attach it to its rotation, audit and journal it."""
        issued, facts = result
        with self.session.batch():  # one round trip
            self.session.insert_certificate(
                CertificateRow(
                    id=cert_id,
                    name=change.name,
                    domains=spec.domains,
                    issuer=spec.issuer,
                    key_type=spec.key_type,
                    serial_number=facts.serial_number,
                    not_before=facts.not_before,
                    not_after=facts.not_after,
                    status=CertStatus.ISSUED,
                    fingerprint=facts.fingerprint,
                    key_ref=key_ref,
                    cert_pem=issued.cert_pem,
                    chain_pem=issued.chain_pem,
                    on_delete=spec.on_delete,
                    issuer_fingerprint=self.desired.issuers[spec.issuer].fingerprint,
                    created_at=now,
                    ari_replaces=issued.ari_replaces,
                    origin=origin_of(self.origin, current),
                )
            )
            if rotation_id is not None:
                self.session.attach_rotation(rotation_id, cert_id)
            if current is not None:
                for removed in sorted(set(current.distributions) - set(spec.targets)):
                    self.session.remove_distribution(change.name, removed)
            action = AuditAction.RENEWED if change.action is Action.ROTATE else AuditAction.ISSUED
            self._audit(
                change,
                cert_id,
                action,
                serial=facts.serial_number,
                fingerprint=facts.fingerprint,
                not_after=facts.not_after.isoformat(),
            )
            # With it, each target's deploy ``started`` step (what _deploy writes first): nothing happens
            # outside the database between the two, so they are one statement of this transaction.
            stored = self._journal_entry(change, JournalStep.CERTIFICATE_STORED, JournalState.DONE, cert_id=cert_id)
            self.session.journal_many([stored, *self._deploy_started(change, cert_id, spec.targets)])
            self.session.clear_failures(change.name)

    def _key_for(
        self, change: Change, key_type: KeyType, current: ActualCertificate | None
    ) -> tuple[str, KeyRef, SecretBytes, JournalEntry | None]:
        """The key for this change: resumed from the journal after a crash (None), else a new one sealed, with
        its ``key-generated`` step for :meth:`_request` to journal (the sealed key only: nothing secret)."""
        journalled = journalled_key(self.session.journal_entries(change.idempotency_key))
        if journalled is not None:
            resumed = self._resume_key(change, journalled, current)
            if resumed is not None:
                return (*resumed, None)
        cert_id = str(uuid.uuid4())
        key_pem = private_key_pem(generate_private_key(key_type))
        key_ref = seal(self.env.kms, key_pem, certificate_context(cert_id))
        generated = self._journal_entry(
            change, JournalStep.KEY_GENERATED, JournalState.DONE, cert_id=cert_id, key_ref=key_ref.envelope_json
        )
        return cert_id, key_ref, key_pem, generated

    def _resume_key(
        self, change: Change, journalled: JournalledKey, current: ActualCertificate | None
    ) -> tuple[str, KeyRef, SecretBytes] | None:
        """The journalled key, opened; None when it can never be opened (it is then discarded).

        A passing KMS failure fails the change and keeps the journal (see ``apply.journalled_key``).
        """
        cert_id, key_ref = journalled.cert_id, None
        try:
            key_ref = key_ref_from_json(journalled.envelope_json)
            return cert_id, key_ref, self._open_key(change, cert_id, key_ref, "resume-issuance", stored=False)
        except KmsError as exc:
            live = self.session.key_ref(current.id) if current is not None and unopenable(exc) else None
            if not discardable(exc, key_ref, live):
                if key_ref is not None and unopenable(exc):
                    raise odd_kms_error(change.name, key_ref, exc) from exc
                raise
            where = {"kms": key_ref.kms, "key_id": key_ref.key_id} if key_ref is not None else {}
            with self.session.transaction():
                discarded = JournalStep.KEY_DISCARDED
                self._journal(change, discarded, JournalState.DONE, cert_id=cert_id, error_code=exc.code)
                self._audit(change, None, AuditAction.KEY_DISCARDED, key_of=cert_id, error_code=exc.code,
                            cause=exc.one_line()[:500], **where)  # fmt: skip
            return None


def origin_of(runner_origin: Origin, current: ActualCertificate | None) -> Origin:
    """Who owns the certificate a runner issues: a new name is the runner's (the facade's runner says API);
    a rotation through the facade keeps the owner; one by the declarations makes the name Git's (adopted)."""
    if current is None:
        return runner_origin
    return current.origin if runner_origin is Origin.API else Origin.GIT


def _replaced(
    current: ActualCertificate | None, rotation_id: int | None, cert_id: str, now: datetime
) -> OpenRotation | None:
    """The rotation ``cert_id`` was attached to by :meth:`IssuanceSteps._store_issued`: it replaces ``current``
    (or the certificate whose open rotation ``_start_rotation`` resumed)."""
    if current is None or rotation_id is None:
        return None
    resumed = current.open_rotation
    old = resumed.old_cert_id if resumed is not None and resumed.rotation_id == rotation_id else current.id
    return OpenRotation(rotation_id, old, cert_id, now)
