"""ACME accounts, orders and renewal info (``AcmeStore``), in memory."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from certreconcile.actual.store import (
    AcmeAccountRecord,
    AcmeOrderRecord,
    RenewalInfoRecord,
)
from certreconcile.domain.status import CertStatus
from certreconcile.testing.fake_state.base import (
    FakeSessionBase,
)


class FakeAcme(FakeSessionBase):
    """ACME accounts, orders and renewal info (``AcmeStore``), in memory."""

    def get_acme_account(self, directory_url: str) -> AcmeAccountRecord | None:
        with self._store._mutex:
            return self._data.acme_accounts.get(directory_url)

    def put_acme_account(self, record: AcmeAccountRecord) -> AcmeAccountRecord:
        with self._store._mutex:
            return self._data.acme_accounts.setdefault(record.directory_url, record)

    def acme_order(self, idempotency_key: str) -> AcmeOrderRecord | None:
        with self._store._mutex:
            stored = self._data.acme_orders.get(idempotency_key)
            return None if stored is None else stored[0]

    def save_acme_order(self, record: AcmeOrderRecord, at: datetime) -> AcmeOrderRecord | None:
        with self._store._mutex:
            previous = self._data.acme_orders.get(record.idempotency_key)
            self._data.acme_orders[record.idempotency_key] = (record, at if previous is None else previous[1])
            return None if previous is None else previous[0]

    def renewal_infos(self, cert_ids: Sequence[str]) -> Mapping[str, RenewalInfoRecord]:
        with self._store._mutex:
            infos = self._data.renewal_infos
            return {cert_id: infos[cert_id] for cert_id in cert_ids if cert_id in infos}

    def save_renewal_infos(self, records: Sequence[RenewalInfoRecord]) -> None:
        with self._store._mutex:
            certificates, infos = self._data.certificates, self._data.renewal_infos
            infos.update((record.cert_id, record) for record in records
                         if (cert := certificates.get(record.cert_id)) is not None
                         and cert.status is not CertStatus.SUPERSEDED)  # fmt: skip

    def save_unchanged_renewal_infos(
        self, cert_ids: Sequence[str], retry_after: datetime, fetched_at: datetime
    ) -> None:
        with self._store._mutex:
            infos = self._data.renewal_infos
            for cert_id in cert_ids:
                if (stored := infos.get(cert_id)) is not None:
                    infos[cert_id] = replace(
                        stored, retry_after=retry_after, fetched_at=fetched_at, explanation_url=None
                    )
