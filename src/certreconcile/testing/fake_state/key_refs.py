"""The stored envelopes (``KeyRefStore``), in memory."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import assert_never

from certreconcile.actual.journal_step import JournalStep
from certreconcile.actual.repository import (
    decode_key_ref,
    encode_key_ref,
)
from certreconcile.actual.store import (
    KeyRefTable,
    KeyRefUsage,
    StoredKeyRef,
)
from certreconcile.domain.keys import KeyRef
from certreconcile.testing.fake_state.base import (
    FakeSessionBase,
)


class FakeKeyRefs(FakeSessionBase):
    """The stored envelopes (``KeyRefStore``), in memory."""

    def _all_key_refs(self, table: KeyRefTable) -> list[tuple[object, StoredKeyRef]]:
        """Every (sort key, stored envelope) of ``table``; the sort keys mirror the SQL order."""
        data = self._data
        found: list[tuple[object, StoredKeyRef]] = []
        match table:
            case KeyRefTable.CERTIFICATE:
                for cert_id, cert in data.certificates.items():
                    if cert.key_ref_text:
                        stored = StoredKeyRef(table, cert_id, decode_key_ref(cert.key_ref_text), cert.row.name, cert_id)
                        found.append((cert_id, stored))
            case KeyRefTable.LOCAL_CA:
                for issuer_name, (_cert_pem, key_ref_text) in data.local_cas.items():
                    found.append(
                        (issuer_name, StoredKeyRef(table, issuer_name, decode_key_ref(key_ref_text), issuer_name))
                    )
            case KeyRefTable.ACME_ACCOUNT:
                pass  # no ACME accounts in memory
            case KeyRefTable.FLEET_CA:
                if data.fleet_ca is not None:
                    found.append(("", StoredKeyRef(table, "fleet-ca", data.fleet_ca.key_ref, "fleet-ca")))
            case KeyRefTable.APPLY_STEP:
                for index, entry in enumerate(data.journal, start=1):
                    text = entry.detail.get("key_ref")
                    if entry.step == JournalStep.KEY_GENERATED and text is not None:
                        stored = StoredKeyRef(
                            table, str(index), decode_key_ref(text), entry.name, entry.detail.get("cert_id")
                        )
                        found.append((index, stored))
            case _:
                assert_never(table)
        found.sort(key=lambda item: item[0])  # type: ignore[arg-type,return-value]
        return found

    def list_key_refs(self, table: KeyRefTable, after: str | None, limit: int) -> Sequence[StoredKeyRef]:
        with self._store._mutex:
            found = self._all_key_refs(table)
        if after is not None:
            bound: object = int(after) if table in (KeyRefTable.ACME_ACCOUNT, KeyRefTable.APPLY_STEP) else after
            found = [item for item in found if item[0] > bound] if table is not KeyRefTable.FLEET_CA else []  # type: ignore[operator]
        return [stored for _key, stored in found[:limit]]

    def key_ref_usage(self) -> Sequence[KeyRefUsage]:
        counts: dict[tuple[str, str], int] = {}
        with self._store._mutex:
            for table in KeyRefTable:
                for _key, stored in self._all_key_refs(table):
                    pair = (stored.key_ref.kms, stored.key_ref.key_id)
                    counts[pair] = counts.get(pair, 0) + 1
        return [KeyRefUsage(kms=kms, key_id=key_id, count=count) for (kms, key_id), count in sorted(counts.items())]

    def replace_key_ref(self, table: KeyRefTable, row_id: str, old: KeyRef, new: KeyRef) -> bool:  # noqa: PLR0911
        new_text = encode_key_ref(new)
        with self._store._mutex:
            data = self._data
            match table:
                case KeyRefTable.CERTIFICATE:
                    cert = data.certificates.get(row_id)
                    if cert is None or cert.key_ref_text != old.envelope_json:
                        return False
                    cert.key_ref_text = new_text
                    cert.row = replace(cert.row, key_ref=new)
                case KeyRefTable.LOCAL_CA:
                    local_ca = data.local_cas.get(row_id)
                    if local_ca is None or local_ca[1] != old.envelope_json:
                        return False
                    data.local_cas[row_id] = (local_ca[0], new_text)
                case KeyRefTable.ACME_ACCOUNT:
                    return False
                case KeyRefTable.FLEET_CA:
                    if data.fleet_ca is None or data.fleet_ca.key_ref.envelope_json != old.envelope_json:
                        return False
                    data.fleet_ca = replace(data.fleet_ca, key_ref=decode_key_ref(new_text))
                case KeyRefTable.APPLY_STEP:
                    index = int(row_id) - 1
                    if not 0 <= index < len(data.journal):
                        return False
                    entry = data.journal[index]
                    if entry.detail.get("key_ref") != old.envelope_json:
                        return False
                    data.journal[index] = replace(entry, detail={**entry.detail, "key_ref": new_text})
                case _:
                    assert_never(table)
            return True
