"""The local CAs (``LocalCaStore``)."""

from __future__ import annotations

from typing import Any

import psycopg

from certreconcile.actual.postgres.connection import (
    PostgresConnection,
    _not_found,
    decode_key_ref,
    encode_key_ref,
)
from certreconcile.actual.store import (
    LocalCaRecord,
)


class PostgresLocalCa(PostgresConnection):
    """The local CAs (``LocalCaStore``)."""

    def get_local_ca(self, issuer_name: str) -> LocalCaRecord | None:
        def work(conn: psycopg.Connection[Any]) -> LocalCaRecord | None:
            row = conn.execute(
                "SELECT issuer_name, cert_pem, key_ref FROM LocalCa WHERE issuer_name = %s", (issuer_name,)
            ).fetchone()
            if row is None:
                return None
            return LocalCaRecord(name=row[0], cert_pem=row[1], key_ref=decode_key_ref(row[2]))

        return self._run(f"reading the local CA of {issuer_name}", work)

    def put_local_ca(self, record: LocalCaRecord) -> LocalCaRecord:
        key_ref_text = encode_key_ref(record.key_ref)

        def work(conn: psycopg.Connection[Any]) -> LocalCaRecord:
            conn.execute(
                "INSERT INTO LocalCa (issuer_name, cert_pem, key_ref) VALUES (%s, %s, %s)"
                " ON CONFLICT (issuer_name) DO NOTHING",
                (record.name, record.cert_pem, key_ref_text),
            )
            stored = self.get_local_ca(record.name)
            if stored is None:
                raise _not_found("local CA", record.name)
            return stored

        return self._run(f"storing the local CA of {record.name}", work)
