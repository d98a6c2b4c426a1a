"""The fleet CA and the enrolled agents (``FleetStore``, design.md section 9)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg

from certreconcile.actual.model import AgentRecord
from certreconcile.actual.postgres.connection import PostgresConnection, _not_found, decode_key_ref, encode_key_ref
from certreconcile.actual.store import AgentCertificateRow, FleetCaRecord

__all__ = ["SQL_AGENTS_ALL", "PostgresFleet", "agents_from_rows"]

#: Every enrolled agent for ``load_actual`` (one query, in name order).
SQL_AGENTS_ALL = (
    "SELECT name, serial, fingerprint, not_before, not_after, enrolled_at, renewed_at, last_seen_at, last_error"
    " FROM FleetAgent ORDER BY name"
)

_SQL_ENROLL = (
    "INSERT INTO FleetAgent (name, serial, fingerprint, cert_pem, not_before, not_after, enrolled_at)"
    " VALUES (%(name)s, %(serial)s, %(fingerprint)s, %(cert_pem)s, %(not_before)s, %(not_after)s, %(at)s)"
    " ON CONFLICT (name) DO "
)
_SQL_ENROLL_REPLACE = (
    "UPDATE SET serial = EXCLUDED.serial, fingerprint = EXCLUDED.fingerprint, cert_pem = EXCLUDED.cert_pem,"
    " not_before = EXCLUDED.not_before, not_after = EXCLUDED.not_after, enrolled_at = EXCLUDED.enrolled_at,"
    " renewed_at = NULL, last_seen_at = NULL, last_error = NULL"
)
_SQL_RENEW = (
    "UPDATE FleetAgent SET serial = %(serial)s, fingerprint = %(fingerprint)s, cert_pem = %(cert_pem)s,"
    " not_before = %(not_before)s, not_after = %(not_after)s, renewed_at = %(at)s"
    " WHERE name = %(name)s AND fingerprint = %(expected)s"
)


def agents_from_rows(rows: Sequence[Sequence[Any]]) -> dict[str, AgentRecord]:
    """The agents of :data:`SQL_AGENTS_ALL`'s rows, by name."""
    return {
        row[0]: AgentRecord(
            name=row[0], serial=row[1], fingerprint=row[2], not_before=row[3], not_after=row[4],
            enrolled_at=row[5], renewed_at=row[6], last_seen_at=row[7], last_error=row[8],
        )
        for row in rows
    }  # fmt: skip


def _params(row: AgentCertificateRow, at: datetime) -> dict[str, Any]:
    return {
        "name": row.name, "serial": row.serial, "fingerprint": row.fingerprint, "cert_pem": row.cert_pem,
        "not_before": row.not_before, "not_after": row.not_after, "at": at,
    }  # fmt: skip


class PostgresFleet(PostgresConnection):
    """The fleet CA and the enrolled agents (``FleetStore``)."""

    def fleet_ca(self) -> FleetCaRecord | None:
        def work(conn: psycopg.Connection[Any]) -> FleetCaRecord | None:
            row = conn.execute("SELECT cert_pem, key_ref FROM FleetCa").fetchone()
            return None if row is None else FleetCaRecord(cert_pem=row[0], key_ref=decode_key_ref(row[1]))

        return self._run("reading the fleet CA", work)

    def put_fleet_ca(self, record: FleetCaRecord) -> FleetCaRecord:
        key_ref_text = encode_key_ref(record.key_ref)

        def work(conn: psycopg.Connection[Any]) -> FleetCaRecord:
            conn.execute(
                "INSERT INTO FleetCa (cert_pem, key_ref) VALUES (%s, %s) ON CONFLICT (id) DO NOTHING",
                (record.cert_pem, key_ref_text),
            )
            stored = self.fleet_ca()
            if stored is None:
                raise _not_found("fleet CA", "fleet-ca")
            return stored

        return self._run("storing the fleet CA", work)

    def agent_certificate(self, name: str) -> AgentCertificateRow | None:
        def work(conn: psycopg.Connection[Any]) -> AgentCertificateRow | None:
            row = conn.execute(
                "SELECT name, serial, fingerprint, cert_pem, not_before, not_after FROM FleetAgent WHERE name = %s",
                (name,),
            ).fetchone()
            return None if row is None else AgentCertificateRow(*row)

        return self._run(f"reading agent {name}", work)

    def enroll_agent(self, row: AgentCertificateRow, at: datetime, *, replace: bool) -> bool:
        statement = _SQL_ENROLL + (_SQL_ENROLL_REPLACE if replace else "NOTHING")

        def work(conn: psycopg.Connection[Any]) -> bool:
            return conn.execute(statement, _params(row, at)).rowcount == 1

        return self._run(f"enrolling agent {row.name}", work)

    def renew_agent(self, row: AgentCertificateRow, expected_fingerprint: str, at: datetime) -> bool:
        def work(conn: psycopg.Connection[Any]) -> bool:
            return conn.execute(_SQL_RENEW, {**_params(row, at), "expected": expected_fingerprint}).rowcount == 1

        return self._run(f"renewing agent {row.name}", work)

    def record_agent_contact(self, name: str, at: datetime, error: str | None) -> None:
        def work(conn: psycopg.Connection[Any]) -> None:
            if error is None:
                conn.execute(
                    "UPDATE FleetAgent SET last_seen_at = GREATEST(last_seen_at, %s), last_error = NULL"
                    " WHERE name = %s",
                    (at, name),
                )
            else:
                conn.execute("UPDATE FleetAgent SET last_error = %s WHERE name = %s", (error, name))

        self._run(f"recording the contact with agent {name}", work)
