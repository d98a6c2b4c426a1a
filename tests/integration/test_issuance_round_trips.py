"""The database round trips of one issued certificate are budgeted (issue 16).

Each statement is a round trip to PostgreSQL and costs this process's CPU; issuing a certificate
took 34 of them (three reads of the current row, a transaction per step, the order read back
before each write). These tests count the round trips and statements an ``apply`` really makes
(libpq's trace of every connection the store opens: a wait for the server's answer is a round
trip) for new certificates and for renewals, with the local CA behind an ACME-like order journal
and a files target, and fail when someone adds statements back.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import pq

from certreconcile.actual.repository import PostgresSession, PostgresStore
from certreconcile.apply.executor import apply_plan
from certreconcile.clock import FixedClock
from certreconcile.plan import Action
from certreconcile.plugins.ports import Issuer, IssueRequest
from engine import T0, cert, desired_doc, environment, load, plan_now
from helpers import record_calls

pytestmark = pytest.mark.integration

COUNT = 6
# Per certificate, with one files target (deploy, verify: 5 round trips of them), measured for 6
# certificates when the budget was set, new / renewal: 91 / 133 round trips and 133 / 173
# statements in all. Before: 96 / 138 and 151 / 191, when the activation had a transaction of its own
# after the targets' outcomes (its BEGIN, its COMMIT and the completed step's INSERT, and a round
# trip); 96 / 144 and 151 / 197, when the old certificate's status was read
# before superseding it; 103 / 151 and 157 / 203, when the targets' deploy ``started`` steps were
# journalled after the certificate's transaction instead of in it; 135 / 183 and 169 / 215, when the
# current row was read again before activating a certificate just stored, the new key's journal step
# had a statement of its own and the targets' outcomes took a round trip per statement; first:
# 266 / 353 round trips, 247 / 329 statements. A renewal also opens and closes its rotation, moves
# the old certificate's status twice and supersedes it.
NEW_ROUND_TRIPS, NEW_STATEMENTS = 14, 21
RENEWAL_ROUND_TRIPS, RENEWAL_STATEMENTS = 21, 28
FIXED = 8  # per apply: the run's start and end, the state serial, the local CA's row


@dataclass
class _Counts:
    round_trips: int = 0
    statements: int = 0
    sql: list[str] = field(default_factory=list)


class TracingStore(PostgresStore):
    """The real store; every connection it opens while ``tracing`` writes libpq's trace to a file."""

    def __init__(self, url: str, folder: Path) -> None:
        super().__init__(url)
        self.folder = folder
        self.tracing = False
        self._files: list[Any] = []

    def _connect(self) -> psycopg.Connection[Any]:
        conn = super()._connect()
        if self.tracing:
            trace = (self.folder / f"trace-{len(self._files)}.log").open("w")
            self._files.append(trace)
            conn.pgconn.trace(trace.fileno())
            conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        return conn

    def close(self) -> None:
        for trace in self._files:
            trace.close()

    def counts(self) -> _Counts:
        """Round trips (the client starts reading after sending) and statements (Execute, Query) so far."""
        counts = _Counts()
        for trace in self._files:
            trace.flush()
        for path in sorted(self.folder.glob("trace-*.log")):
            last = "B"
            for line in path.read_text().splitlines():
                direction, _, rest = line.partition("\t")
                if direction not in ("F", "B"):
                    continue
                if direction == "B" and last == "F":
                    counts.round_trips += 1
                last = direction
                message = rest.partition("\t")[2]
                if direction == "F" and message.startswith(("Execute", "Query")):
                    counts.statements += 1
                if direction == "F" and message.startswith(("Parse", "Query")):
                    counts.sql.append(message[:100])
        return counts


_ORDERS = itertools.count(1)


class _OrderingCa:
    """The local CA behind the order journal, as the ACME issuer uses it: look up, place, finalize."""

    def __init__(self, inner: Issuer) -> None:
        self.name = inner.name
        self._inner = inner
        self.replaced: dict[str, str | None] = {}  # name -> the PEM of the certificate it replaces (ARI)

    def supported_key_types(self) -> Any:
        return self._inner.supported_key_types()

    def issue(self, request: IssueRequest) -> Any:
        assert request.journal is not None
        self.replaced[request.name] = request.replaces_cert_pem
        if request.journal.saved_order_url() is None:
            order = f"https://ca.test/order/{next(_ORDERS)}"
            request.journal.record_order(order, "pending", "https://ca.test/directory")
        else:
            order = request.journal.saved_order_url() or ""
        issued = self._inner.issue(request)
        request.journal.record_order(order, "valid", "https://ca.test/directory")
        return issued

    def revoke(self, cert_pem: str, reason: str) -> None:
        self._inner.revoke(cert_pem, reason)


@pytest.fixture
def store(database_url: str, tmp_path: Path) -> Iterator[TracingStore]:
    folder = tmp_path / "traces"
    folder.mkdir()
    store = TracingStore(database_url, folder)
    yield store
    store.close()


def _traced_apply(
    tmp_path: Path,
    store: TracingStore,
    clock: FixedClock,
    desired: Any,
    action: Action,
    leaf_pems: dict[str, str] | None = None,
    ca: list[_OrderingCa] | None = None,
) -> _Counts:
    env = environment(tmp_path, desired, store, clock)
    ordering = _OrderingCa(env.issuers["internal"])
    env = replace(env, issuers={"internal": ordering}, leaf_pems=leaf_pems)
    if ca is not None:
        ca.append(ordering)
    plan = plan_now(desired, store, clock)
    assert [change.action for change in plan.changes] == [action] * COUNT
    before = store.counts()
    store.tracing = True
    try:
        result = apply_plan(plan, desired, env, concurrency=1)
    finally:
        store.tracing = False
    assert result.ok, [failure.message for failure in result.failures]
    assert plan_now(desired, store, clock).is_empty  # every certificate issued, deployed, active
    after = store.counts()
    return _Counts(after.round_trips - before.round_trips, after.statements - before.statements, after.sql)


def test_a_new_certificate_costs_at_most_its_budget_of_round_trips(tmp_path: Path, store: TracingStore) -> None:
    clock = FixedClock(T0)
    desired = load(tmp_path, desired_doc([cert(f"c{number}") for number in range(COUNT)]))
    counts = _traced_apply(tmp_path, store, clock, desired, Action.ISSUE)
    assert counts.round_trips <= COUNT * NEW_ROUND_TRIPS + FIXED, counts.sql
    assert counts.statements <= COUNT * NEW_STATEMENTS + FIXED, counts.sql


def test_a_renewal_costs_at_most_its_budget_of_round_trips(tmp_path: Path, store: TracingStore) -> None:
    clock = FixedClock(T0)
    desired = load(tmp_path, desired_doc([cert(f"c{number}") for number in range(COUNT)], lifetime="30d"))
    _traced_apply(tmp_path, store, clock, desired, Action.ISSUE)
    clock.advance(timedelta(days=21))  # inside the renewal window of a 30-day certificate
    counts = _traced_apply(tmp_path, store, clock, desired, Action.ROTATE)
    assert counts.round_trips <= COUNT * RENEWAL_ROUND_TRIPS + FIXED, counts.sql
    assert counts.statements <= COUNT * RENEWAL_STATEMENTS + FIXED, counts.sql


def test_a_renewal_takes_the_certificate_it_replaces_from_the_leaf_cache_of_run(
    tmp_path: Path, store: TracingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``run`` keeps the leaf PEMs it asked the CA about (ARI): a renewal names the certificate it replaces
    from them, a read fewer; one the cache lacks is read. The CA is told the same PEM either way."""
    clock = FixedClock(T0)
    desired = load(tmp_path, desired_doc([cert(f"c{number}") for number in range(COUNT)], lifetime="30d"))
    _traced_apply(tmp_path, store, clock, desired, Action.ISSUE)
    with store.session() as session:
        current = session.load_actual(clock.now()).certificates
        old = {name: (found.id, session.certificate_pems(found.id)[0]) for name, found in current.items()}
    reads = record_calls(monkeypatch, PostgresSession, "certificate_pems")
    clock.advance(timedelta(days=21))
    cached = {cert_id: pem for name, (cert_id, pem) in old.items() if name != "c0"}  # c0's is not kept
    ca: list[_OrderingCa] = []
    _traced_apply(tmp_path, store, clock, desired, Action.ROTATE, leaf_pems=cached, ca=ca)
    assert ca[0].replaced == {name: pem for name, (_, pem) in old.items()}
    assert reads == [old["c0"][0]]
