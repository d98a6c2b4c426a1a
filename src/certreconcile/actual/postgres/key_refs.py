"""The stored envelopes of every table (``KeyRefStore``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from certreconcile.actual.postgres.connection import (
    PostgresConnection,
    decode_key_ref,
    encode_key_ref,
)
from certreconcile.actual.store import (
    KeyRefTable,
    KeyRefUsage,
    StoredKeyRef,
)
from certreconcile.domain.keys import KeyRef

# kms rewrap: one page of each table's envelopes in row-key order (key sets, never OFFSET).
# Certificate ids are UUIDs, whose order is that of their text; issuer names compare in "C".
_SQL_KEY_REFS: dict[KeyRefTable, tuple[str, str, str]] = {  # select, after, order
    KeyRefTable.CERTIFICATE: (
        "SELECT id::text, key_ref, name, id::text FROM Certificate WHERE key_ref <> ''",
        " AND id > %s::uuid",
        " ORDER BY Certificate.id LIMIT %s",  # qualified: a bare `id` would sort the id::text output
    ),
    KeyRefTable.LOCAL_CA: (
        "SELECT issuer_name, key_ref, issuer_name, NULL FROM LocalCa WHERE true",
        ' AND issuer_name COLLATE "C" > %s',
        ' ORDER BY issuer_name COLLATE "C" LIMIT %s',
    ),
    KeyRefTable.ACME_ACCOUNT: (
        "SELECT id::text, key_ref, directory_url, NULL FROM AcmeAccount WHERE true",
        " AND id > %s::bigint",
        " ORDER BY AcmeAccount.id LIMIT %s",
    ),
    KeyRefTable.APPLY_STEP: (
        "SELECT id::text, detail->>'key_ref', name, detail->>'cert_id' FROM ApplyStep"
        " WHERE step = 'key-generated' AND detail ? 'key_ref'",  # JournalStep.KEY_GENERATED (a test holds them)
        " AND id > %s::bigint",
        " ORDER BY ApplyStep.id LIMIT %s",
    ),
    KeyRefTable.FLEET_CA: (  # one row: any page after the first is empty
        "SELECT 'fleet-ca', key_ref, 'fleet-ca', NULL FROM FleetCa WHERE true",
        " AND %s::text IS NULL",
        " LIMIT %s",
    ),
}


_SQL_REPLACE_KEY_REF: dict[KeyRefTable, str] = {
    KeyRefTable.CERTIFICATE: "UPDATE Certificate SET key_ref = %s WHERE id = %s::uuid AND key_ref = %s",
    KeyRefTable.LOCAL_CA: "UPDATE LocalCa SET key_ref = %s WHERE issuer_name = %s AND key_ref = %s",
    KeyRefTable.ACME_ACCOUNT: "UPDATE AcmeAccount SET key_ref = %s WHERE id = %s::bigint AND key_ref = %s",
    KeyRefTable.APPLY_STEP: (
        "UPDATE ApplyStep SET detail = jsonb_set(detail, '{key_ref}', to_jsonb(%s::text))"
        " WHERE id = %s::bigint AND detail->>'key_ref' = %s"
    ),
    KeyRefTable.FLEET_CA: "UPDATE FleetCa SET key_ref = %s WHERE %s = 'fleet-ca' AND key_ref = %s",
}


# Counts per KMS and master key, from a SECURITY DEFINER function (migration 0008): the
# plan role may call it without being allowed to read any key envelope.
_SQL_KEY_REF_USAGE = (
    'SELECT kms, key_id, keys FROM certreconcile_key_ref_usage() ORDER BY kms COLLATE "C", key_id COLLATE "C"'
)


class PostgresKeyRefs(PostgresConnection):
    """The stored envelopes of every table (``KeyRefStore``)."""

    def list_key_refs(self, table: KeyRefTable, after: str | None, limit: int) -> Sequence[StoredKeyRef]:
        select, after_row, order = _SQL_KEY_REFS[table]

        def work(conn: psycopg.Connection[Any]) -> list[StoredKeyRef]:
            if after is None:
                rows = conn.execute(select + order, (limit,))
            else:
                rows = conn.execute(select + after_row + order, (after, limit))
            return [
                StoredKeyRef(table=table, row_id=row[0], key_ref=decode_key_ref(row[1]), name=row[2], cert_id=row[3])
                for row in rows.fetchall()
            ]

        return self._run(f"listing the key references of {table.value}", work)

    def key_ref_usage(self) -> Sequence[KeyRefUsage]:
        def work(conn: psycopg.Connection[Any]) -> list[KeyRefUsage]:
            rows = conn.execute(_SQL_KEY_REF_USAGE).fetchall()
            return [KeyRefUsage(kms=str(row[0]), key_id=str(row[1]), count=int(row[2])) for row in rows]

        return self._run("reading which KMS keys wrap the stored keys", work)

    def replace_key_ref(self, table: KeyRefTable, row_id: str, old: KeyRef, new: KeyRef) -> bool:
        new_text = encode_key_ref(new)

        def work(conn: psycopg.Connection[Any]) -> bool:
            updated = conn.execute(_SQL_REPLACE_KEY_REF[table], (new_text, row_id, old.envelope_json))
            return updated.rowcount == 1

        return self._run(f"replacing the key reference of {table.value} {row_id}", work)
