"""A whole certificate lifetime in the database, on an injected clock, through `run` (no waiting).

Real PostgreSQL, local KMS, local CA (90-day certificates, renew_before 30d), files target:

- ``shop``: issued (active) → its window opens → ``expiring_soon`` (audited) → renewed by ``run``:
  the old one ``superseded``, the new one ``active``;
- ``api``: its domains changed too, so its renewal waits for a reviewed apply: ``SELECT ... WHERE
  status = 'expiring_soon'`` finds it; the reviewed apply renews it (old ``superseded``);
- ``legacy``: its CA fails every renewal: ``expiring_soon``, ``rotating`` (attempted), then
  ``expired`` after ``not_after`` (audited);
- ``gone``: removed from the declarations, its retirement not applied (``run`` without
  ``--apply-changes``): ``active`` until ``not_after``, then ``expired``, by ``run --once`` (the CLI,
  ``CERTRECONCILE_TEST_NOW``). ``status`` shows the stored statuses.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from certreconcile import engine
from certreconcile.actual.repository import PostgresStore
from certreconcile.clock import FixedClock
from certreconcile.desired import load_desired
from certreconcile.desired.model import DesiredState
from certreconcile.errors import IssuerError
from certreconcile.plan.plan import Action
from certreconcile.plugins.ports import IssuedCertificate, Issuer, IssueRequest
from certreconcile.reconciler import RENEWAL_ACTOR, CycleResult, Reconciler
from certreconcile.wiring import Settings, build_environment
from e2e.conftest import Runner

pytestmark = pytest.mark.integration

DAY = timedelta(days=1)
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

BASE = """\
kms: {local: {}}
issuers:
  internal: {local_ca: {common_name: Lifecycle CA, lifetime: 90d}}
  flaky: {local_ca: {common_name: Flaky CA, lifetime: 90d}}
targets:
  web: {files: {dir: deploy/web}}
"""


def entry(name: str, *domains: str, issuer: str = "internal") -> str:
    names = ", ".join(domains or (f"{name}.example.test",))
    return f"  - {{name: {name}, domains: [{names}], issuer: {issuer}, renew_before: 30d, targets: [web]}}\n"


def write(directory: Path, *entries: str) -> Path:
    directory.mkdir(exist_ok=True)
    (directory / "base.yaml").write_text(BASE)
    (directory / "certificates.yaml").write_text("certificates:\n" + "".join(entries))
    return directory


class Source:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def load(self) -> DesiredState:
        return load_desired(self.directory)


class DownAfterFirstIssue:
    """The flaky CA: issues once, then is down for good."""

    def __init__(self, inner: Issuer) -> None:
        self.inner = inner
        self.issued = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def issue(self, request: IssueRequest) -> IssuedCertificate:
        if self.issued:
            raise IssuerError("the CA is down", code="acme-directory")
        self.issued += 1
        return self.inner.issue(request)


def rows(url: str, sql: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


def by_status(url: str, status: str) -> list[str]:
    return [r[0] for r in rows(url, "SELECT name FROM Certificate WHERE status = %s ORDER BY name", status)]


def history(url: str, name: str) -> list[str]:
    return [r[0] for r in rows(url, "SELECT status FROM Certificate WHERE name = %s ORDER BY created_at", name)]


def moves(url: str, action: str) -> list[tuple[str, str, str, str]]:
    found = rows(url, "SELECT name, actor, detail FROM CertAudit WHERE action = %s ORDER BY seq", action)
    return [(name, actor, detail["from"], detail["reason"]) for name, actor, detail in found]


def test_a_whole_lifetime_in_the_database(
    tmp_path: Path, database_url: str, cli_env: dict[str, str], run_cli: Runner
) -> None:
    directory = write(tmp_path / "desired", entry("shop"), entry("api"), entry("legacy", issuer="flaky"),
                      entry("gone"))  # fmt: skip
    settings = Settings.from_env(directory, {k: v for k, v in cli_env.items() if k.startswith("CERTRECONCILE_")}
                                 | {"USER": "e2e-tester"})  # fmt: skip
    store = PostgresStore(database_url)
    clock = FixedClock(T0)
    flaky: list[DownAfterFirstIssue] = []

    def environment(desired: DesiredState) -> Any:
        env = build_environment(desired, settings, store, clock)
        if not flaky:
            flaky.append(DownAfterFirstIssue(env.issuers["flaky"]))
        return replace(env, issuers={**env.issuers, "flaky": flaky[0]})

    def cycle(*, apply_changes: bool = False) -> CycleResult:
        return Reconciler(Source(directory), store, environment, clock, apply_changes=apply_changes,
                          refresh=False).cycle()  # fmt: skip

    first = cycle(apply_changes=True)
    assert sorted((r.change.name, r.outcome) for r in first.results) == [
        ("api", "done"), ("gone", "done"), ("legacy", "done"), ("shop", "done")
    ]  # fmt: skip
    assert by_status(database_url, "active") == ["api", "gone", "legacy", "shop"]

    # A declaration change awaiting review, and a name removed (its retirement not applied by `run`).
    write(directory, entry("shop"), entry("api", "api.example.test", "www.api.example.test"),
          entry("legacy", issuer="flaky"))  # fmt: skip
    clock.advance(40 * DAY)
    quiet = cycle()
    assert not quiet.errors and not quiet.results
    assert by_status(database_url, "active") == ["api", "gone", "legacy", "shop"]  # not due yet: nothing moves
    assert moves(database_url, "expiring_soon") == []

    clock.advance(22 * DAY)  # day 62: every window opened (due between day 57 and 60)
    due = cycle()
    assert moves(database_url, "expiring_soon") == [
        (name, RENEWAL_ACTOR, "active", "renewal-window") for name in ("api", "legacy", "shop")
    ]  # `gone` is no longer declared: no renewal time, it stays active
    assert {(r.change.name, r.outcome) for r in due.results} == {("shop", "done"), ("legacy", "failed")}
    assert history(database_url, "shop") == ["superseded", "active"]  # renewed
    actions = [r[0] for r in rows(database_url, "SELECT action FROM CertAudit WHERE name = 'shop' AND action IN"
                                                " ('issued', 'expiring_soon', 'renewed') ORDER BY seq")]  # fmt: skip
    assert actions == ["issued", "expiring_soon", "renewed"]  # active → expiring_soon → renewed, in that order
    assert by_status(database_url, "expiring_soon") == ["api"]  # waiting for review: the query tells the truth
    assert history(database_url, "legacy") == ["rotating"]  # its renewal was attempted, and failed

    status = json.loads(run_cli("status", "--dir", str(directory), "--format", "json", check_code=0,
                                env={**cli_env, "CERTRECONCILE_TEST_NOW": clock.now().isoformat()}).stdout)  # fmt: skip
    shown = {c["name"]: c["status"] for c in status["certificates"]}
    assert shown == {"api": "expiring_soon", "gone": "active", "legacy": "rotating", "shop": "active"}

    # The reviewed apply of api's change (a person's actor), on the same engine path.
    reviewed = engine.plan(engine.gather(load_desired(directory), store, clock.now()), clock.now())
    only_api = replace(reviewed, changes=tuple(c for c in reviewed.changes if c.name == "api"))
    assert [c.action for c in only_api.changes] == [Action.ROTATE]
    env = environment(load_desired(directory))
    assert engine.apply(only_api, load_desired(directory), env).ok
    assert history(database_url, "api") == ["superseded", "active"]
    assert by_status(database_url, "expiring_soon") == []

    # Past not_after (day 90): what was left unrenewed expires; history stays superseded.
    clock.advance(30 * DAY)
    late = run_cli("run", "--once", "--dir", str(directory), "--no-refresh",
                   env={**cli_env, "CERTRECONCILE_TEST_NOW": clock.now().isoformat()})  # fmt: skip
    assert late.returncode == 0, late.stderr  # a new process: the flaky CA works again, legacy is renewed
    expired = moves(database_url, "expired")
    assert sorted(expired) == [
        ("gone", RENEWAL_ACTOR, "active", "not-after"),
        ("legacy", RENEWAL_ACTOR, "rotating", "not-after"),
    ]
    assert history(database_url, "shop")[0] == "superseded" and history(database_url, "api")[0] == "superseded"
    assert "gone" in by_status(database_url, "expired")
    assert history(database_url, "legacy")[0] == "expired"

    again = cycle()
    assert not again.errors
    assert len(moves(database_url, "expired")) == 2  # moved once, audited once
    assert history(database_url, "legacy") == ["expired", "active"]  # renewed from expired: the old one stays so
