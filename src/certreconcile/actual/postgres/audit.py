"""The audit recorder (``AuditRecorder``) and the chain reads of ``audit verify``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg

from certreconcile.actual.postgres.batches import rows_source
from certreconcile.actual.postgres.connection import (
    CODE_INVALID,
    PostgresConnection,
    _like_prefix,
)
from certreconcile.audit.events import AuditAction, AuditChainHead, AuditChainRow, AuditEvent
from certreconcile.errors import StateError

_AUDIT_COLUMNS = (("cert_id", "uuid"), ("name", "text"), ("action", "text"), ("actor", "text"),
                  ("at", "timestamptz"), ("detail", "text"))  # fmt: skip
_SQL_CHAIN = "SELECT seq, id, cert_id, name, action, actor, timestamp, detail::text, prev_hash, row_hash FROM CertAudit"


def _row_to_chain(row: Sequence[Any]) -> AuditChainRow:
    return AuditChainRow(
        seq=row[0],
        id=row[1],
        cert_id=None if row[2] is None else str(row[2]),
        name=row[3],
        action=row[4],
        actor=row[5],
        at=row[6],
        detail=row[7],
        prev_hash=row[8],
        row_hash=row[9],
    )


class PostgresAudit(PostgresConnection):
    """The audit recorder (``AuditRecorder``) and the chain reads of ``audit verify``."""

    def audit_events(
        self,
        name: str | None = None,
        action: str | None = None,
        limit: int | None = None,
        *,
        actor: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Sequence[AuditEvent]:
        """Oldest first; with ``limit``, the newest ``limit`` events (still oldest first)."""
        actor_prefix = None if actor is None else _like_prefix(actor)

        def work(conn: psycopg.Connection[Any]) -> list[AuditEvent]:
            rows = conn.execute(
                "SELECT id, cert_id::text, name, action, actor, timestamp, detail FROM CertAudit"
                " WHERE (%(name)s::text IS NULL OR name = %(name)s)"
                " AND (%(action)s::text IS NULL OR action = %(action)s)"
                " AND (%(actor)s::text IS NULL OR actor LIKE %(actor)s)"
                " AND (%(since)s::timestamptz IS NULL OR timestamp >= %(since)s)"
                " AND (%(until)s::timestamptz IS NULL OR timestamp < %(until)s)"
                " ORDER BY id DESC LIMIT %(limit)s",
                {"name": name, "action": action, "limit": limit, "actor": actor_prefix, "since": since, "until": until},
            ).fetchall()
            rows.reverse()
            return [
                AuditEvent(
                    id=row[0],
                    cert_id=row[1],
                    name=row[2],
                    action=row[3],
                    actor=row[4],
                    at=row[5],
                    detail={str(key): str(value) for key, value in row[6].items()},
                )
                for row in rows
            ]

        return self._run("reading the audit trail", work)

    # The audit chain, read by certreconcile.audit.verify (the AuditChainReader protocol).
    def audit_chain_head(self) -> AuditChainHead:
        """The head the insert trigger last moved (CertAuditHead)."""

        def work(conn: psycopg.Connection[Any]) -> AuditChainHead:
            row = conn.execute("SELECT seq, row_hash FROM CertAuditHead").fetchone()
            if row is None:
                raise StateError(
                    "the audit chain head (CertAuditHead) is missing",
                    code="audit-tampered",
                    hint="the audit trail was tampered with; `certreconcile audit verify` shows where",
                )
            return AuditChainHead(seq=int(row[0]), row_hash=str(row[1]))

        return self._run("reading the audit chain head", work)

    def audit_chain_page(self, after_seq: int, limit: int) -> Sequence[AuditChainRow]:
        """The rows after ``after_seq`` in chain order, at most ``limit``."""

        def work(conn: psycopg.Connection[Any]) -> list[AuditChainRow]:
            rows = conn.execute(_SQL_CHAIN + " WHERE seq > %s ORDER BY seq LIMIT %s", (after_seq, limit))
            return [_row_to_chain(row) for row in rows]

        return self._run("reading the audit chain", work)

    def audit_chain_row_with_hash(self, row_hash: str) -> AuditChainRow | None:
        """The first row (by seq) whose stored hash is ``row_hash`` (a full scan: for diagnosis only)."""

        def work(conn: psycopg.Connection[Any]) -> AuditChainRow | None:
            row = conn.execute(_SQL_CHAIN + " WHERE row_hash = %s ORDER BY seq LIMIT 1", (row_hash,)).fetchone()
            return None if row is None else _row_to_chain(row)

        return self._run("looking up an audit chain hash", work)

    def append_audit(self, event: AuditEvent) -> None:
        if event.action not in AuditAction.ALL:
            raise StateError(
                f"unknown audit action {event.action!r}",
                code=CODE_INVALID,
                hint=f"use one of {', '.join(AuditAction.ALL)}",
            )
        self._run(
            f"recording the audit event {event.action} of {event.name}",
            lambda conn: conn.execute(
                "INSERT INTO CertAudit (cert_id, name, action, actor, timestamp, detail)"
                " VALUES (%s, %s, %s, %s, %s, %s::jsonb)",
                (
                    event.cert_id,
                    event.name,
                    event.action,
                    event.actor,
                    event.at,
                    json.dumps(dict(event.detail)),
                ),
            ),
        )

    def append_audit_many(self, events: Sequence[AuditEvent]) -> None:
        """One INSERT of every event, in order: the chain trigger links them in that order."""
        if not events:
            return
        unknown = [event.action for event in events if event.action not in AuditAction.ALL]
        if unknown:
            raise StateError(
                f"unknown audit action {unknown[0]!r}",
                code=CODE_INVALID,
                hint=f"use one of {', '.join(AuditAction.ALL)}",
            )
        source, params = rows_source(
            "e",
            _AUDIT_COLUMNS,
            [(e.cert_id, e.name, e.action, e.actor, e.at, json.dumps(dict(e.detail))) for e in events],
        )
        self._run(
            f"recording {len(events)} audit events of {events[0].name}",
            lambda conn: conn.execute(
                "INSERT INTO CertAudit (cert_id, name, action, actor, timestamp, detail)"  # noqa: S608  source: placeholders only
                f" SELECT cert_id, name, action, actor, at, detail::jsonb FROM {source} ORDER BY n",
                params,
            ),
        )
