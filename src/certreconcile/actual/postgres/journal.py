"""Runs and the step journal (``JournalStore``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg

from certreconcile.actual.postgres.batches import rows_source
from certreconcile.actual.postgres.connection import (
    PostgresConnection,
    _not_found,
)
from certreconcile.actual.store import (
    JournalEntry,
)

_JOURNAL_COLUMNS = (("run_id", "bigint"), ("key", "text"), ("name", "text"), ("step", "text"), ("state", "text"),
                    ("detail", "text"), ("at", "timestamptz"))  # fmt: skip


class PostgresJournal(PostgresConnection):
    """Runs and the step journal (``JournalStore``)."""

    def journal_entries(self, idempotency_key: str) -> Sequence[JournalEntry]:
        def work(conn: psycopg.Connection[Any]) -> list[JournalEntry]:
            rows = conn.execute(
                "SELECT run_id, idempotency_key, name, step, state, detail, at FROM ApplyStep"
                " WHERE idempotency_key = %s ORDER BY id",
                (idempotency_key,),
            ).fetchall()
            return [
                JournalEntry(
                    run_id=row[0],
                    idempotency_key=row[1],
                    name=row[2],
                    step=row[3],
                    state=row[4],
                    detail={str(key): str(value) for key, value in row[5].items()},
                    at=row[6],
                )
                for row in rows
            ]

        return self._run(f"reading the journal of {idempotency_key}", work)

    def start_run(self, git_commit: str | None, plan_digest: str, at: datetime) -> int:
        def work(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute(
                "INSERT INTO ApplyRun (git_commit, plan_digest, started_at) VALUES (%s, %s, %s) RETURNING id",
                (git_commit, plan_digest, at),
            ).fetchone()
            if row is None:  # impossible: RETURNING of a one-row INSERT
                raise _not_found("new apply run", plan_digest)
            return int(row[0])

        return self._run("recording the start of an apply", work)

    def finish_run(self, run_id: int, outcome: str, at: datetime) -> None:
        def work(conn: psycopg.Connection[Any]) -> None:
            updated = conn.execute(
                "UPDATE ApplyRun SET outcome = %s, finished_at = %s WHERE id = %s", (outcome, at, run_id)
            )
            if updated.rowcount != 1:
                raise _not_found("apply run", run_id)

        self._run(f"recording the end of apply run {run_id}", work)

    def journal(self, entry: JournalEntry) -> None:
        self._run(
            f"journalling {entry.step} of {entry.name}",
            lambda conn: conn.execute(
                "INSERT INTO ApplyStep (run_id, idempotency_key, name, step, state, detail, at)"
                " VALUES (%s, %s, %s, %s, %s, %s::jsonb, coalesce(%s, clock_timestamp()))",
                (
                    entry.run_id,
                    entry.idempotency_key,
                    entry.name,
                    entry.step,
                    entry.state,
                    json.dumps(dict(entry.detail)),
                    entry.at,
                ),
            ),
        )

    def journal_many(self, entries: Sequence[JournalEntry]) -> None:
        """One INSERT of every entry, in order (a fan-out journals two rows per target)."""
        if not entries:
            return
        source, params = rows_source(
            "e",
            _JOURNAL_COLUMNS,
            [(e.run_id, e.idempotency_key, e.name, e.step, e.state, json.dumps(dict(e.detail)), e.at) for e in entries],
        )
        self._run(
            f"journalling {len(entries)} steps of {entries[0].name}",
            lambda conn: conn.execute(
                "INSERT INTO ApplyStep (run_id, idempotency_key, name, step, state, detail, at)"  # noqa: S608  source: placeholders only
                " SELECT run_id, key, name, step, state, detail::jsonb, coalesce(at, clock_timestamp())"
                f" FROM {source} ORDER BY n",
                params,
            ),
        )
