"""The local CAs (``LocalCaStore``), in memory."""

from __future__ import annotations

from certreconcile.actual.repository import (
    decode_key_ref,
    encode_key_ref,
)
from certreconcile.actual.store import (
    LocalCaRecord,
)
from certreconcile.testing.fake_state.base import (
    FakeSessionBase,
)


class FakeLocalCa(FakeSessionBase):
    """The local CAs (``LocalCaStore``), in memory."""

    def get_local_ca(self, issuer_name: str) -> LocalCaRecord | None:
        with self._store._mutex:
            stored = self._data.local_cas.get(issuer_name)
            if stored is None:
                return None
            return LocalCaRecord(name=issuer_name, cert_pem=stored[0], key_ref=decode_key_ref(stored[1]))

    def put_local_ca(self, record: LocalCaRecord) -> LocalCaRecord:
        key_ref_text = encode_key_ref(record.key_ref)
        with self._store._mutex:
            self._data.local_cas.setdefault(record.name, (record.cert_pem, key_ref_text))
            stored = self.get_local_ca(record.name)
            assert stored is not None
            return stored
