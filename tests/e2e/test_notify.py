"""Notifications (``notify:``) end to end: real PostgreSQL, a real HTTP receiver, a real SMTP server (aiosmtpd).

Two ``run`` replicas (the Reconciler, as in test_run.py) share one database: each event reaches each sink
exactly once; a receiver that is down gets the event once it is back (the clock is advanced past the
backoff, never waited for); failed and expiring events carry their facts; no secret reaches the outbox,
the audit or the logs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from canaries import CanaryScan, secret_canary
from certreconcile.actual.repository import PostgresStore
from certreconcile.cli.commands.run import GitDesiredSource
from certreconcile.clock import FixedClock
from certreconcile.desired.model import DesiredState
from certreconcile.errors import IssuerError
from certreconcile.reconciler import Reconciler
from certreconcile.wiring import Settings, build_environment
from e2e.test_run import CERTIFICATES, query, write_desired
from notify_servers import HttpReceiver, Post, smtp_server

pytestmark = pytest.mark.integration

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"notify-canary-hmac-key-0123456789ab").decode()
SMTP_PASSWORD = "smtp-canary-password-5f2a9c"
APPRISE_TOKEN = "apprise-canary-token-77e1b0"


def notify_yaml(sinks: str, expiring_within: str = "1m") -> str:
    return f"notify:\n  expiring_within: {expiring_within}\n  sinks:\n{sinks}"


def webhook_sink(url: str, events: str = "") -> str:
    return f"    hook:\n      webhook: {{url: '{url}/hooks/cert', secret_env: HOOK_SECRET}}\n{events}"


def email_sink(port: int) -> str:
    return (
        "    mail:\n      email: {host: 127.0.0.1, port: " + str(port) + ", starttls: false, from: certs@example.test,"
        " to: [ops@example.test], username_env: SMTP_USER, password_env: SMTP_PASSWORD}\n"
    )


def apprise_sink() -> str:
    return "    chat:\n      apprise: {urls_env: APPRISE_URLS}\n"


def replica(desired: Path, database_url: str, tmp_path: Path, clock: FixedClock, env: dict[str, str], *,
            apply_changes: bool = True, wrap_issuers: Any = None) -> Reconciler:  # fmt: skip
    settings = Settings.from_env(desired, {
        "CERTRECONCILE_DATABASE_URL": database_url,
        "CERTRECONCILE_LOCAL_KMS_KEY_FILE": str(tmp_path / "kms" / "master.key"),
        "USER": "e2e-tester", **env,
    })  # fmt: skip
    store = PostgresStore(database_url)

    def environment(state: DesiredState) -> Any:
        built = build_environment(state, settings, store, clock)
        if wrap_issuers is not None:
            built = replace(built, issuers={name: wrap_issuers(issuer) for name, issuer in built.issuers.items()})
        return built

    return Reconciler(GitDesiredSource(desired), store, environment, clock, apply_changes=apply_changes,
                      settings=settings)  # fmt: skip


def verify_independently(secret: str, post: Post) -> None:
    """The Standard Webhooks check, written here from the specification (not the library's code)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{post.headers['webhook-id']}.{post.headers['webhook-timestamp']}.".encode() + post.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    versions = [part.split(",", 1) for part in post.headers["webhook-signature"].split()]
    assert any(version == "v1" and hmac.compare_digest(value, expected) for version, value in versions), post


def webhook_events(receiver: HttpReceiver, secret: str) -> list[tuple[str, str]]:
    """(type, name) of each POST, after checking its signature twice (the library, and by hand)."""
    found = []
    for post in receiver.posts:
        verify_independently(secret, post)
        payload = Webhook(secret).verify(post.body, post.headers)  # the standardwebhooks library
        found.append((payload["type"], payload["data"]["name"]))
    return sorted(found)


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    server = HttpReceiver()
    try:
        yield server
    finally:
        server.stop()


def run_together(replicas: list[Reconciler]) -> list[Any]:
    barrier = threading.Barrier(len(replicas))
    outcomes: list[Any] = [None] * len(replicas)

    def one(index: int) -> None:
        barrier.wait()
        outcomes[index] = replicas[index].cycle()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(replicas))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert all(o is not None and not o.errors and not o.failures for o in outcomes), outcomes
    return outcomes


def assert_no_secret(database_url: str, logs: str, *extra: str) -> None:
    scan = CanaryScan([secret_canary("webhook-secret", WEBHOOK_SECRET), secret_canary("smtp", SMTP_PASSWORD),
                       secret_canary("apprise", APPRISE_TOKEN)])  # fmt: skip
    for (row,) in query(database_url, "SELECT row_to_json(a)::text FROM CertAudit a"):
        scan.scan("audit-row", row[:60], row)
    for (row,) in query(database_url, "SELECT row_to_json(n)::text FROM NotificationOutbox n"):
        scan.scan("outbox-row", row[:60], row)
    scan.scan("log", "caplog", logs)
    for index, text in enumerate(extra):
        scan.scan("other", str(index), text)
    assert not scan.hits, scan.hits


def test_two_replicas_send_each_event_once_to_each_sink(
    database_url: str, tmp_path: Path, receiver: HttpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver.start()
    with smtp_server("certs", SMTP_PASSWORD) as smtp:
        desired = write_desired(tmp_path)
        (desired / "notify.yaml").write_text(notify_yaml(webhook_sink(receiver.url) + email_sink(smtp.port)
                                                         + apprise_sink()))  # fmt: skip
        env = {"HOOK_SECRET": WEBHOOK_SECRET, "SMTP_USER": "certs", "SMTP_PASSWORD": SMTP_PASSWORD,
               "APPRISE_URLS": f"json://bot:{APPRISE_TOKEN}@127.0.0.1:{receiver.port}/apprise/{APPRISE_TOKEN}"
               }  # fmt: skip
        clock = FixedClock(datetime.now(UTC).replace(microsecond=0))
        replica(desired, database_url, tmp_path, clock, env).cycle()  # issues both certificates
        replicas = [replica(desired, database_url, tmp_path, clock, env) for _ in range(2)]
        rounds = 2
        for _ in range(rounds):
            clock.advance(timedelta(seconds=61))  # both certificates fall due: both replicas plan the renewals
            run_together(replicas)
        run_together(replicas)  # nothing new: nothing is sent again

        expected = sorted([("certificate.issued", "api"), ("certificate.issued", "shop")]
                          + [("certificate.renewed", name) for name in ("api", "shop") for _ in range(rounds)])
        hooks = [post for post in receiver.posts if post.path == "/hooks/cert"]
        chats = [post for post in receiver.posts if post.path == f"/apprise/{APPRISE_TOKEN}"]
        receiver.posts[:] = hooks
        assert webhook_events(receiver, WEBHOOK_SECRET) == expected
        assert len({post.headers["webhook-id"] for post in hooks}) == len(hooks)
        subjects = sorted(str(message["Subject"]) for message in smtp.messages)
        assert subjects == sorted(f"certreconcile: certificate {name} {kind}" for kind, name in
                                  ((t.removeprefix("certificate."), n) for t, n in expected))  # fmt: skip
        assert smtp.logins and set(smtp.logins) == {"certs"}
        assert {str(message["To"]) for message in smtp.messages} == {"ops@example.test"}
        assert sorted(json.loads(post.body)["title"] for post in chats) == subjects
        assert all(post.headers["authorization"].startswith("Basic ") for post in chats)

    audited = query(database_url, "SELECT detail->>'sink', detail->>'outcome', count(*) FROM CertAudit"
                    " WHERE action = 'notified' GROUP BY 1, 2 ORDER BY 1")  # fmt: skip
    assert audited == [(sink, "sent", len(expected)) for sink in ("chat", "hook", "mail")]
    assert query(database_url, "SELECT DISTINCT state FROM NotificationOutbox") == [("sent",)]
    assert_no_secret(database_url, caplog.text)


def test_a_receiver_that_is_down_gets_the_event_after_it_comes_back(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    down = HttpReceiver()  # its port: nothing listens there yet
    desired = write_desired(tmp_path, CERTIFICATES.replace("renew_before: 59m", "renew_before: 10m"))
    (desired / "notify.yaml").write_text(notify_yaml(webhook_sink(down.url + "/?token=q-secret")))
    env = {"HOOK_SECRET": WEBHOOK_SECRET}
    clock = FixedClock(datetime.now(UTC).replace(microsecond=0))
    first = replica(desired, database_url, tmp_path, clock, env)
    first.cycle()
    rows = query(database_url, "SELECT state, attempts, last_error, next_attempt_at FROM NotificationOutbox")
    assert len(rows) == 2 and {(state, attempts) for state, attempts, _, _ in rows} == {("pending", 1)}
    error = rows[0][2]
    assert "error[notify-failed]" in error and "ConnectError" in error and "q-secret" not in error
    assert rows[0][3] == clock.now() + timedelta(seconds=30)  # the first retry, 30 s later

    try:
        down.start()
        replica(desired, database_url, tmp_path, clock, env).cycle()  # not due yet: nothing is sent
        assert down.posts == []
        clock.advance(timedelta(seconds=30))
        run_together([replica(desired, database_url, tmp_path, clock, env) for _ in range(2)])
        assert webhook_events(down, WEBHOOK_SECRET) == [("certificate.issued", "api"), ("certificate.issued", "shop")]
        clock.advance(timedelta(minutes=5))
        run_together([replica(desired, database_url, tmp_path, clock, env) for _ in range(2)])
        assert len(down.posts) == 2  # sent once, never again
    finally:
        down.stop()
    assert query(database_url, "SELECT state, attempts FROM NotificationOutbox") == [("sent", 2), ("sent", 2)]
    assert_no_secret(database_url, caplog.text)


class FailingIssuer:
    """The real issuer, except that ``api`` is refused by the CA (a failure that backs the name off)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def issue(self, request: Any) -> Any:
        if request.name == "api":
            raise IssuerError("the CA refused api", code="acme-account", hint="a test refusal")
        return self._inner.issue(request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_failed_and_expiring_events_carry_the_code_and_the_next_attempt(
    database_url: str, tmp_path: Path, receiver: HttpReceiver
) -> None:
    receiver.start()
    desired = write_desired(tmp_path, CERTIFICATES.replace("renew_before: 59m", "renew_before: 10m"))
    events = "      events: [failed, expiring]\n"
    (desired / "notify.yaml").write_text(notify_yaml(webhook_sink(receiver.url, events), expiring_within="30m"))
    env = {"HOOK_SECRET": WEBHOOK_SECRET}
    clock = FixedClock(datetime.now(UTC).replace(microsecond=0))
    replicas = [replica(desired, database_url, tmp_path, clock, env, wrap_issuers=FailingIssuer) for _ in range(2)]
    outcomes = [r.cycle() for r in replicas]  # the second one finds api backed off: it tries nothing
    assert [len(o.failures) for o in outcomes] == [1, 0]
    [(failed_body,)] = [(json.loads(p.body),) for p in receiver.posts]
    assert failed_body["type"] == "certificate.failed"
    data = failed_body["data"]
    (until,) = query(database_url, "SELECT until FROM IssuanceBackoff WHERE name = 'api'")[0]
    assert data["name"] == "api" and data["error_code"] == "acme-account"
    assert datetime.fromisoformat(data["next_attempt_at"]) == until == clock.now() + timedelta(hours=1)
    assert "the CA refused api" in data["message"]

    clock.advance(timedelta(minutes=31))  # shop's certificate (1 h) now expires within 30 minutes, not renewed yet
    for r in replicas:
        r.cycle()
    types = sorted((json.loads(p.body)["type"], json.loads(p.body)["data"]["name"]) for p in receiver.posts)
    assert types == [("certificate.expiring", "shop"), ("certificate.failed", "api")]
    expiring = next(json.loads(p.body)["data"] for p in receiver.posts if b"expiring" in p.body)
    assert int(expiring["seconds_left"]) <= 30 * 60 and expiring["not_after"]


def test_starttls_required_but_not_offered_is_refused_clearly(database_url: str, tmp_path: Path) -> None:
    with smtp_server("certs", SMTP_PASSWORD) as smtp:
        desired = write_desired(tmp_path)
        sink = email_sink(smtp.port).replace("starttls: false", "starttls: true")
        (desired / "notify.yaml").write_text(notify_yaml(sink))
        env = {"SMTP_USER": "certs", "SMTP_PASSWORD": SMTP_PASSWORD}
        clock = FixedClock(datetime.now(UTC).replace(microsecond=0))
        replica(desired, database_url, tmp_path, clock, env).cycle()
        assert smtp.messages == []
    [error] = {row[0] for row in query(database_url, "SELECT last_error FROM NotificationOutbox")}
    assert "error[notify-smtp-failed]" in error and "does not offer STARTTLS" in error


def test_unset_secret_and_wrong_password_are_retried_without_leaking(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with smtp_server("certs", "the-right-password") as smtp:
        desired = write_desired(tmp_path)
        (desired / "notify.yaml").write_text(notify_yaml(email_sink(smtp.port) + webhook_sink("http://127.0.0.1:9")))
        env = {"SMTP_USER": "certs", "SMTP_PASSWORD": SMTP_PASSWORD}  # wrong password; HOOK_SECRET unset
        clock = FixedClock(datetime.now(UTC).replace(microsecond=0))
        cycle = replica(desired, database_url, tmp_path, clock, env).cycle()
        assert not cycle.errors  # notifications never fail a cycle
        assert smtp.messages == []
    errors = dict(query(database_url, "SELECT sink, last_error FROM NotificationOutbox"))
    assert "error[notify-env-unset]" in errors["hook"] and "HOOK_SECRET" in errors["hook"]
    assert "error[notify-smtp-failed]" in errors["mail"] and "SMTPAuthenticationError 535" in errors["mail"]
    assert query(database_url, "SELECT DISTINCT state, attempts FROM NotificationOutbox") == [("pending", 1)]
    assert_no_secret(database_url, caplog.text, repr(cycle), os.linesep.join(errors.values()))


def test_the_apply_role_queues_and_sends_notifications(
    database_url: str, tmp_path: Path, receiver: HttpReceiver
) -> None:
    import uuid

    import psycopg
    from psycopg import sql

    from certreconcile.actual.roles import RoleNames, database_roles
    from helpers import login_url

    tag = uuid.uuid4().hex[:10]
    names = RoleNames(plan=f"plan_{tag}", apply=f"apply_{tag}", owner=f"owner_{tag}")
    try:
        database_roles(database_url, names, execute=True)
        receiver.start()
        desired = write_desired(tmp_path)
        (desired / "notify.yaml").write_text(notify_yaml(webhook_sink(receiver.url)))
        clock = FixedClock(datetime.now(UTC).replace(microsecond=0))
        apply_url = login_url(database_url, names.apply)
        cycle = replica(desired, apply_url, tmp_path, clock, {"HOOK_SECRET": WEBHOOK_SECRET}).cycle()
        assert not cycle.errors and not cycle.failures
        issued = [("certificate.issued", "api"), ("certificate.issued", "shop")]
        assert webhook_events(receiver, WEBHOOK_SECRET) == issued
        with psycopg.connect(login_url(database_url, names.plan)) as conn:  # the plan role reads, never writes
            assert conn.execute("SELECT count(*) FROM NotificationOutbox WHERE state = 'sent'").fetchone() == (2,)
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                conn.execute("UPDATE NotificationOutbox SET state = 'pending'")
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            for role in (names.plan, names.apply, names.owner):
                if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                    conn.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(sql.Identifier(role)))
                    conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
                    conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_apply_sends_its_events_and_stays_quiet_about_secrets(
    run_cli: Any, cli_env: dict[str, str], database_url: str, tmp_path: Path, receiver: HttpReceiver
) -> None:
    receiver.start()
    desired = write_desired(tmp_path)
    (desired / "notify.yaml").write_text(notify_yaml(webhook_sink(receiver.url)))
    env = {**cli_env, "HOOK_SECRET": WEBHOOK_SECRET}
    result = run_cli("apply", "--dir", str(desired), "--auto-approve", env=env, check_code=0)
    issued = [("certificate.issued", "api"), ("certificate.issued", "shop")]
    assert webhook_events(receiver, WEBHOOK_SECRET) == issued
    actors = query(database_url, "SELECT DISTINCT actor FROM CertAudit WHERE action = 'notified'")
    assert actors == [("user:e2e-tester",)]  # apply's own actor
    run_cli("apply", "--dir", str(desired), "--auto-approve", env=env, check_code=0)  # nothing new
    assert len(receiver.posts) == 2
    assert_no_secret(database_url, result.stdout + result.stderr)


def test_two_run_processes_notify_each_event_once(
    cli_env: dict[str, str], database_url: str, tmp_path: Path, receiver: HttpReceiver
) -> None:
    import signal
    import subprocess
    import sys

    from e2e.test_run import wait_for

    receiver.start()
    # Due 3 to 10 seconds after issuance on each process's test clock (see test_run.py), so renewals repeat.
    desired = write_desired(tmp_path, CERTIFICATES.replace("renew_before: 59m", "renew_before: 3590s"))
    (desired / "notify.yaml").write_text(notify_yaml(webhook_sink(receiver.url)))
    env = {**cli_env, "HOOK_SECRET": WEBHOOK_SECRET,
           "CERTRECONCILE_TEST_NOW": datetime.now(UTC).replace(microsecond=0).isoformat()}  # fmt: skip
    command = [sys.executable, "-m", "certreconcile", "run", "--dir", str(desired), "--interval", "1",
               "--jitter", "50%", "--apply-changes"]  # fmt: skip
    processes = [subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True) for _ in range(2)]  # fmt: skip
    try:
        wait_for(lambda: len(receiver.posts) >= 6, timeout=90)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        logs = [process.communicate(timeout=60)[1] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], logs
    delivered = webhook_events(receiver, WEBHOOK_SECRET)
    ids = [post.headers["webhook-id"] for post in receiver.posts]
    assert len(ids) == len(set(ids))  # never twice
    sent = query(database_url, "SELECT event, name FROM NotificationOutbox WHERE state = 'sent'")
    assert delivered == sorted((f"certificate.{event}", name) for event, name in sent)
    renewed = query(database_url, "SELECT count(*) FROM CertAudit WHERE action = 'renewed'")[0][0]
    assert delivered.count(("certificate.issued", "api")) == 1 and delivered.count(("certificate.issued", "shop")) == 1
    assert sum(1 for kind, _ in delivered if kind == "certificate.renewed") <= renewed
    assert_no_secret(database_url, "\n".join(logs))
