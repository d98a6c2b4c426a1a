"""Runs and the step journal (``JournalStore``), in memory."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from certreconcile.actual.repository import (
    CODE_INVALID,
    CODE_NOT_FOUND,
)
from certreconcile.actual.store import (
    JournalEntry,
)
from certreconcile.errors import StateError
from certreconcile.testing.fake_state.base import (
    _STEP_STATES,
    FakeSessionBase,
)


class FakeJournal(FakeSessionBase):
    """Runs and the step journal (``JournalStore``), in memory."""

    def journal_entries(self, idempotency_key: str) -> Sequence[JournalEntry]:
        with self._store._mutex:
            return [entry for entry in self._data.journal if entry.idempotency_key == idempotency_key]

    def start_run(self, git_commit: str | None, plan_digest: str, at: datetime) -> int:
        with self._store._mutex:
            run_id = self._next_id()
            self._data.runs[run_id] = (git_commit, plan_digest, at, None, None)
            return run_id

    def finish_run(self, run_id: int, outcome: str, at: datetime) -> None:
        with self._store._mutex:
            run = self._data.runs.get(run_id)
            if run is None:
                raise StateError(f"apply run {run_id} does not exist", code=CODE_NOT_FOUND, hint="")
            self._data.runs[run_id] = (run[0], run[1], run[2], outcome, at)

    def journal(self, entry: JournalEntry) -> None:
        if entry.state not in _STEP_STATES:
            raise StateError(
                f"journal state {entry.state!r}: rejected (constraint chk_step_state)",
                code=CODE_INVALID,
                hint="",
            )
        with self._store._mutex:
            if entry.run_id not in self._data.runs:
                raise StateError(
                    f"apply run {entry.run_id}: rejected (constraint applystep_run_id_fkey)",
                    code=CODE_INVALID,
                    hint="",
                )
            at = entry.at if entry.at is not None else self._store._clock.now()
            if self._data.journal and entry.at is None:
                # clock_timestamp() never goes backwards within one database either.
                at = max(at, max(item.at or at for item in self._data.journal) + timedelta(microseconds=1))
            self._data.journal.append(replace(entry, at=at, detail=dict(entry.detail)))

    def journal_many(self, entries: Sequence[JournalEntry]) -> None:
        with self._store._mutex:
            for entry in entries:  # every entry valid, or nothing is written
                if entry.state not in _STEP_STATES or entry.run_id not in self._data.runs:
                    self.journal(entry)  # raises the error this entry alone would raise
            for entry in entries:
                self.journal(entry)
