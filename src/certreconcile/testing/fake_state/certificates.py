"""Certificates, rotations, distributions, backoffs and the serial (``CertificateStore``), in memory."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from certreconcile.actual.model import (
    HISTORY_ORDERS_WINDOW,
    HISTORY_WINDOW,
    ActualCertificate,
    ActualState,
    DistributionState,
    IssuanceBackoff,
    IssuanceHistory,
    OpenRotation,
    PastIssuance,
    PastOrder,
    RenewalWindow,
    StateMeta,
    backoff_delay,
)
from certreconcile.actual.repository import (
    CODE_CONFLICT,
    CODE_INVALID,
    CODE_NOT_FOUND,
    decode_key_ref,
    encode_key_ref,
)
from certreconcile.actual.store import (
    CertificateRow,
    DistributionRecord,
    FollowedCommit,
    LapsedCertificate,
)
from certreconcile.domain.keys import KeyRef
from certreconcile.domain.status import CertStatus, allowed_transitions, check_moves, check_transition
from certreconcile.errors import StateError
from certreconcile.testing.fake_state.base import (
    _LIVE,
    FakeSessionBase,
    _Backoff,
    _Cert,
    _Distribution,
    _Rotation,
)


class FakeCertificates(FakeSessionBase):
    """Certificates, rotations, distributions, backoffs and the serial (``CertificateStore``), in memory."""

    def _actual(self, cert: _Cert) -> ActualCertificate:
        name = cert.row.name
        distributions = {
            target: entry.state
            for (cert_name, target), entry in sorted(self._data.distributions.items())
            if cert_name == name
        }
        rotation: OpenRotation | None = None
        for candidate in sorted(self._data.rotations.values(), key=lambda rotation: rotation.id):
            if candidate.completed_at is None and self._data.certificates[candidate.cert_id].row.name == name:
                rotation = OpenRotation(
                    rotation_id=candidate.id,
                    old_cert_id=candidate.cert_id,
                    new_cert_id=candidate.new_cert_id,
                    triggered_at=candidate.triggered_at,
                )
        row = cert.row
        return ActualCertificate(
            id=row.id,
            name=name,
            domains=row.domains,
            issuer=row.issuer,
            key_type=row.key_type,
            serial_number=row.serial_number,
            not_before=row.not_before,
            not_after=row.not_after,
            status=cert.status,
            fingerprint=row.fingerprint,
            on_delete=row.on_delete,
            has_key=cert.key_ref_text != "",
            distributions=distributions,
            open_rotation=rotation,
            issuer_fingerprint=row.issuer_fingerprint,
            origin=row.origin,
            renewal_window=(
                None
                if (info := self._data.renewal_infos.get(row.id)) is None
                else RenewalWindow(info.window_start, info.window_end, info.retry_after)
            ),
        )

    def load_actual(self, now: datetime | None = None) -> ActualState:
        with self._store._mutex:
            names = sorted({cert.row.name for cert in self._data.certificates.values()})
            certificates: dict[str, ActualCertificate] = {}
            for name in names:
                current = self._current(name)
                if current is not None:
                    certificates[name] = self._actual(current)
            return ActualState(
                meta=self.meta(),
                certificates=certificates,
                backoffs={
                    name: IssuanceBackoff(entry.failures, entry.last_failure_at, entry.until, entry.declaration_digest)
                    for name, entry in sorted(self._data.backoff.items())
                },
                issuance_history=self._issuance_history(now or self._store._clock.now()),
                agents=self._agent_records(),
            )

    def issuance_history(self, now: datetime) -> IssuanceHistory:
        with self._store._mutex:
            return self._issuance_history(now)

    def _issuance_history(self, now: datetime) -> IssuanceHistory:
        """Mirrors the two history queries of the PostgreSQL store (same windows, same order)."""
        certificates = self._data.certificates
        issuances: list[tuple[datetime, str, PastIssuance]] = []
        orders: list[tuple[datetime, int, PastOrder]] = []
        for index, (record, created_at) in enumerate(self._data.acme_orders.values()):
            if not record.directory_url:
                continue
            cert = certificates.get(record.cert_id) if record.cert_id is not None else None
            if created_at >= now - HISTORY_ORDERS_WINDOW:
                ari = cert is not None and cert.row.ari_replaces is not None
                orders.append((created_at, index, PastOrder(record.directory_url, created_at, ari)))
            if cert is None or cert.created_at < now - HISTORY_WINDOW:
                continue
            renewal = any(
                other.row.domains == cert.row.domains
                and other.row.issuer == cert.row.issuer
                and other.created_at < cert.created_at
                for other in certificates.values()
            )
            past = PastIssuance(
                record.directory_url, frozenset(cert.row.domains), cert.created_at, cert.row.ari_replaces is not None,
                renewal,
            )  # fmt: skip
            issuances.append((cert.created_at, cert.row.id, past))
        return IssuanceHistory(
            issuances=tuple(item[2] for item in sorted(issuances, key=lambda item: item[:2])),
            orders=tuple(item[2] for item in sorted(orders, key=lambda item: item[:2])),
        )

    def meta(self) -> StateMeta:
        with self._store._mutex:
            return StateMeta(lineage=self._store._lineage, serial=self._data.serial)

    def current_certificate(self, name: str) -> ActualCertificate | None:
        with self._store._mutex:
            current = self._current(name)
            return None if current is None else self._actual(current)

    def certificate_pems(self, cert_id: str) -> tuple[str, str]:
        with self._store._mutex:
            cert = self._cert(cert_id)
            return (cert.row.cert_pem, cert.row.chain_pem)

    def leaf_pems(self, cert_ids: Sequence[str]) -> Mapping[str, str]:
        with self._store._mutex:
            certificates = self._data.certificates
            return {cert_id: certificates[cert_id].row.cert_pem for cert_id in cert_ids if cert_id in certificates}

    def key_ref(self, cert_id: str) -> KeyRef:
        with self._store._mutex:
            return decode_key_ref(self._cert(cert_id).key_ref_text)

    def certificate_status(self, cert_id: str) -> CertStatus:
        with self._store._mutex:
            return self._cert(cert_id).status

    def rotation_replacing(self, new_cert_id: str) -> OpenRotation | None:
        with self._store._mutex:
            open_ones = [
                rotation
                for rotation in self._data.rotations.values()
                if rotation.new_cert_id == new_cert_id and rotation.completed_at is None
            ]
            if not open_ones:
                return None
            rotation = max(open_ones, key=lambda candidate: candidate.id)
            return OpenRotation(
                rotation_id=rotation.id,
                old_cert_id=rotation.cert_id,
                new_cert_id=rotation.new_cert_id,
                triggered_at=rotation.triggered_at,
            )

    def insert_certificate(self, row: CertificateRow) -> None:
        if not row.domains:
            raise StateError(
                f"certificate {row.id} has no domain", code=CODE_INVALID, hint="declare at least one domain"
            )
        key_ref_text = encode_key_ref(row.key_ref)
        try:
            uuid.UUID(row.id)
        except ValueError:
            raise StateError(f"certificate id {row.id!r} is not a UUID", code=CODE_INVALID, hint="") from None
        if row.not_after <= row.not_before:
            raise StateError(
                f"certificate {row.id}: rejected (constraint chk_cert_validity)", code=CODE_INVALID, hint=""
            )
        with self._store._mutex:
            data = self._data
            if row.id in data.certificates:
                raise StateError(
                    f"certificate {row.id} exists (constraint certificate_pkey)", code=CODE_CONFLICT, hint=""
                )
            if any(cert.row.serial_number == row.serial_number for cert in data.certificates.values()):
                raise StateError(
                    f"serial {row.serial_number} exists (constraint certificate_serial_number_key)",
                    code=CODE_CONFLICT,
                    hint="",
                )
            if row.status in _LIVE:
                self._check_live_unique(row.name, exclude_id=None)
            created_at = row.created_at if row.created_at is not None else self._store._clock.now()
            data.certificates[row.id] = _Cert(
                row=replace(row, created_at=created_at),
                key_ref_text=key_ref_text,
                status=row.status,
                created_at=created_at,
            )

    def set_status(self, cert_id: str, new: CertStatus) -> CertStatus:
        with self._store._mutex:
            cert = self._cert(cert_id)
            old = cert.status
            check_transition(old, new)
            if old == new:
                return old
            if new in _LIVE and cert.retired_at is None:
                self._check_live_unique(cert.row.name, exclude_id=cert_id)
            self._moved(cert_id, new)
            return old

    def set_status_if_allowed(self, cert_id: str, new: CertStatus) -> CertStatus:
        with self._store._mutex:
            old = self._cert(cert_id).status
            if new in allowed_transitions(old):
                self.set_status(cert_id, new)  # the mutex is re-entrant
            return old

    def compare_and_set_status(self, cert_id: str, expected: CertStatus, new: CertStatus) -> bool:
        check_transition(expected, new)
        with self._store._mutex:
            cert = self._data.certificates.get(cert_id)
            if cert is None or cert.status is not expected:
                return False
            if new in _LIVE and expected not in _LIVE and cert.retired_at is None:
                self._check_live_unique(cert.row.name, exclude_id=cert_id)
            self._moved(cert_id, new)
            return True

    def _moved(self, cert_id: str, new: CertStatus) -> None:
        """The status written (the caller holds the mutex); superseded: its renewal info goes (migration 0020)."""
        self._data.certificates[cert_id].status = new
        if new is CertStatus.SUPERSEDED:
            self._data.renewal_infos.pop(cert_id, None)

    def compare_and_set_statuses(self, moves: Sequence[tuple[str, CertStatus, CertStatus]]) -> set[str]:
        check_moves(moves)
        with self._store._mutex:  # one statement: all of them at once
            return {cert_id for cert_id, expected, new in moves if self.compare_and_set_status(cert_id, expected, new)}

    def lapsed_certificates(self, now: datetime, limit: int) -> list[LapsedCertificate]:
        with self._store._mutex:
            rows = sorted(
                (cert.row.not_after, cert_id, cert)
                for cert_id, cert in self._data.certificates.items()
                if cert.status in (CertStatus.ACTIVE, CertStatus.EXPIRING_SOON) and cert.row.not_after <= now
            )
            return [LapsedCertificate(i, c.row.name, c.status, not_after) for not_after, i, c in rows[:limit]]

    def retire(self, cert_id: str, at: datetime) -> None:
        """Retire every row of the certificate's name, so no older row becomes current."""
        with self._store._mutex:
            name = self._cert(cert_id).row.name
            for cert in self._data.certificates.values():
                if cert.row.name == name and cert.retired_at is None:
                    cert.retired_at = at

    def open_rotation(self, old_cert_id: str, at: datetime) -> int:
        """Open a rotation of ``old_cert_id``; an already open one is returned instead."""
        with self._store._mutex:
            self._cert(old_cert_id)
            for rotation in self._data.rotations.values():
                if rotation.cert_id == old_cert_id and rotation.completed_at is None:
                    return rotation.id
            rotation_id = self._next_id()
            self._data.rotations[rotation_id] = _Rotation(id=rotation_id, cert_id=old_cert_id, triggered_at=at)
            return rotation_id

    def attach_rotation(self, rotation_id: int, new_cert_id: str) -> None:
        with self._store._mutex:
            self._cert(new_cert_id)
            rotation = self._data.rotations.get(rotation_id)
            if rotation is None or rotation.completed_at is not None:
                raise StateError(f"open rotation {rotation_id} does not exist", code=CODE_NOT_FOUND, hint="")
            rotation.new_cert_id = new_cert_id

    def complete_rotation(self, rotation_id: int, at: datetime) -> None:
        """Close the rotation (idempotent). The status changes are the caller's to make."""
        with self._store._mutex:
            rotation = self._data.rotations.get(rotation_id)
            if rotation is None:
                raise StateError(f"rotation {rotation_id} does not exist", code=CODE_NOT_FOUND, hint="")
            if rotation.completed_at is not None:
                return
            if rotation.new_cert_id is None:
                raise StateError(
                    f"rotation {rotation_id} has no replacement certificate yet",
                    code=CODE_INVALID,
                    hint="attach the new certificate before completing the rotation",
                )
            rotation.completed_at = at

    def record_distributions(self, records: Sequence[DistributionRecord]) -> None:
        with self._store._mutex:
            for record in records:
                self._cert(record.cert_id)  # every certificate exists, or nothing is written
            for record in records:
                self.record_distribution(
                    record.cert_id,
                    record.target,
                    record.fingerprint,
                    pushed_at=record.pushed_at,
                    verified_at=record.verified_at,
                    last_error=record.last_error,
                    target_fingerprint=record.target_fingerprint,
                )

    def record_distribution(
        self,
        cert_id: str,
        target: str,
        fingerprint: str,
        *,
        pushed_at: datetime | None,
        verified_at: datetime | None,
        last_error: str | None,
        target_fingerprint: str | None,
    ) -> None:
        with self._store._mutex:
            name = self._cert(cert_id).row.name
            previous = self._data.distributions.get((name, target))
            verified_fingerprint = fingerprint if verified_at is not None else None
            if verified_fingerprint is None and previous is not None:
                verified_fingerprint = previous.state.verified_fingerprint
            self._data.distributions[(name, target)] = _Distribution(
                cert_id=cert_id,
                state=DistributionState(
                    target=target,
                    fingerprint=fingerprint,
                    pushed_at=pushed_at,
                    verified_at=verified_at,
                    last_error=last_error,
                    target_fingerprint=target_fingerprint,
                    verified_fingerprint=verified_fingerprint,
                ),
            )

    def remove_distribution(self, name: str, target: str) -> None:
        with self._store._mutex:
            self._data.distributions.pop((name, target), None)

    def bump_serial(self) -> int:
        with self._store._mutex:
            self._data.serial += 1
            return self._data.serial

    def followed_commit(self) -> FollowedCommit | None:
        with self._store._mutex:
            return self._data.followed

    def follow_commit(self, expected: FollowedCommit | None, new: FollowedCommit) -> bool:
        with self._store._mutex:
            if self._data.followed != expected:
                return False
            self._data.followed = new
            return True

    def record_failure(self, name: str, at: datetime, declaration_digest: str | None) -> datetime:
        with self._store._mutex:
            previous = self._data.backoff.get(name)
            same = previous is not None and previous.declaration_digest == declaration_digest
            failures = previous.failures + 1 if previous is not None and same else 1
            until = at + backoff_delay(failures)
            self._data.backoff[name] = _Backoff(failures, at, until, declaration_digest)
            return until

    def clear_failures(self, name: str) -> None:
        with self._store._mutex:
            self._data.backoff.pop(name, None)

    def failure_count(self, name: str) -> int:
        """How many failures in a row ``name`` has had (0 when none): drives the backoff length."""
        with self._store._mutex:
            entry = self._data.backoff.get(name)
            return 0 if entry is None else entry.failures
