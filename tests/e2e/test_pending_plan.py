"""The plan tells the truth through the CLI: a declared certificate that failed to issue is a pending change.

The CA here is an ACME directory that refuses every request (a problem document), so every issuance
fails at once and backs its name off (1 h). (A CA that does not answer at all is a fault outside the
name and backs nothing off: tests/e2e/test_faults_network.py.) The backoff runs on the real clock;
nothing waits it out: the test reads its end from the database and checks that plan, apply and
status all show it. The ``run`` loop is driven in-process on a FixedClock.
"""

from __future__ import annotations

import http.server
import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import yaml

from certreconcile.clock import FixedClock
from e2e.conftest import Runner
from e2e.test_run import CERTIFICATES, query, reconciler_for, write_desired


class _Refusing(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = b'{"type": "urn:ietf:params:acme:error:unauthorized", "detail": "no"}'
        self.send_response(403)
        self.send_header("Content-Type", "application/problem+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


_REFUSING = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
threading.Thread(target=_REFUSING.serve_forever, daemon=True).start()
#: A CA that refuses every request: an order fails at once, and the name backs off.
DOWN = f"http://127.0.0.1:{_REFUSING.server_address[1]}/directory"


def doc(issuer: str, targets: list[str]) -> dict[str, Any]:
    return {
        "kms": {"local": {}},
        "issuers": {
            "internal": {"local_ca": {"common_name": "Pending CA", "lifetime": "90d"}},
            "down": {"acme": {"directory": DOWN}},
        },
        "targets": {name: {"files": {"dir": f"out/{name}"}} for name in ("deploy", "edge")},
        "certificates": [{"name": "shop", "domains": ["shop.example.com"], "issuer": issuer, "targets": targets}],
    }


def backoff_until(database_url: str) -> tuple[int, datetime]:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT failures, until FROM IssuanceBackoff WHERE name = 'shop'").fetchone()
    assert row is not None
    return row[0], row[1]


def minute(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%dT%H:%MZ}"


def status_of(run_cli: Runner, directory: Path) -> dict[str, Any]:
    document = json.loads(run_cli("status", "--dir", str(directory), "--format", "json", check_code=0).stdout)
    (shop,) = document["certificates"]
    return dict(shop)


def test_a_failed_issuance_is_a_pending_change_with_its_next_attempt(
    run_cli: Runner, tmp_path: Path, database_url: str
) -> None:
    desired = tmp_path / "repo"
    desired.mkdir()
    (desired / "c.yaml").write_text(yaml.safe_dump(doc("down", ["deploy"])))
    run_cli("apply", "--dir", str(desired), "--auto-approve", check_code=1)
    failures, until = backoff_until(database_url)
    assert failures == 1

    plan = run_cli("plan", "--dir", str(desired), "--detailed-exitcode", check_code=2)
    assert f"  + issue shop (waiting until {minute(until)})\n" in plan.stdout
    assert "# pending: last attempt failed at " in plan.stdout
    assert "No changes" not in plan.stdout
    assert "(1 waiting for a retry)" in plan.stdout
    document = json.loads(run_cli("plan", "--dir", str(desired), "--format", "json", check_code=0).stdout)
    (change,) = document["changes"]
    assert (change["action"], datetime.fromisoformat(change["deferred_until"])) == ("issue", until)

    shop = status_of(run_cli, desired)
    assert shop["status"] == "not-issued"
    assert shop["flags"] == ["unverified:deploy", "pending", f"next-attempt:{minute(until)}"]
    assert datetime.fromisoformat(shop["next_attempt_at"]) == until
    table = run_cli("status", "--dir", str(desired), check_code=0).stdout
    assert "No certificates are managed yet" not in table and f"next-attempt:{minute(until)}" in table

    # Apply does not try again before its time: skipped, and no new failure is counted.
    applied = run_cli("apply", "--dir", str(desired), "--auto-approve", check_code=0)
    assert "+ shop: skipped: waiting until " in applied.stdout
    assert backoff_until(database_url) == (1, until)


def test_a_failed_rotation_waits_while_the_valid_certificate_reaches_a_new_target(
    run_cli: Runner, tmp_path: Path, database_url: str
) -> None:
    desired = tmp_path / "repo"
    desired.mkdir()
    (desired / "c.yaml").write_text(yaml.safe_dump(doc("internal", ["deploy"])))
    run_cli("apply", "--dir", str(desired), "--auto-approve", check_code=0)
    # Moved to a CA that is down (a rotation that fails) and, in the same commit, a new target.
    (desired / "c.yaml").write_text(yaml.safe_dump(doc("down", ["deploy", "edge"])))
    run_cli("apply", "--dir", str(desired), "--auto-approve", check_code=1)
    _, until = backoff_until(database_url)

    plan = run_cli("plan", "--dir", str(desired), "--detailed-exitcode", check_code=2)
    assert f"  ~ rotate shop (waiting until {minute(until)})\n" in plan.stdout
    assert "  > redistribute shop\n" in plan.stdout  # not deferred: the valid certificate exists
    shop = status_of(run_cli, desired)
    assert shop["flags"] == ["unverified:edge", "rotation-open", "pending", f"next-attempt:{minute(until)}"]
    assert sorted(shop["pending"]) == ["redistribute", "rotate"]

    applied = run_cli("apply", "--dir", str(desired), "--auto-approve", check_code=0)
    assert "~ shop: skipped: waiting until " in applied.stdout
    assert "> shop: done: redistributed to edge" in applied.stdout

    # The rotation still waits (still a change); the new target serves the valid certificate.
    plan = run_cli("plan", "--dir", str(desired), "--detailed-exitcode", check_code=2)
    assert f"~ rotate shop (waiting until {minute(until)})" in plan.stdout and "redistribute shop" not in plan.stdout
    shop = status_of(run_cli, desired)
    assert shop["flags"] == ["rotation-open", "pending", f"next-attempt:{minute(until)}"]
    assert shop["targets"]["edge"]["verified_at"] is not None


class DownIssuer:
    """A CA that fails every issuance (as one that is down does)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls = 0

    def issue(self, request: Any) -> Any:
        self.calls += 1
        raise RuntimeError("CA unreachable")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_a_backed_off_issuance_waits_for_its_next_attempt(database_url: str, tmp_path: Path) -> None:
    """The pending issue stays in the plan, but run does not try (nor record a run) before its time."""
    desired = write_desired(tmp_path, CERTIFICATES.split("  - name: api", maxsplit=1)[0])
    clock = FixedClock(datetime.now(UTC).replace(microsecond=0))
    issuers: list[DownIssuer] = []

    def down(inner: Any) -> DownIssuer:
        issuers.append(DownIssuer(inner))
        return issuers[-1]

    replica = reconciler_for(desired, database_url, tmp_path, clock, apply_changes=True, wrap_issuers=down)
    first = replica.cycle()
    assert [(r.change.name, r.outcome) for r in first.results] == [("shop", "failed")]
    runs = query(database_url, "SELECT count(*) FROM ApplyRun")
    clock.advance(timedelta(minutes=59))
    waiting = replica.cycle()
    assert (waiting.results, waiting.errors, waiting.outcome) == ((), (), "noop")
    assert query(database_url, "SELECT count(*) FROM ApplyRun") == runs
    assert sum(issuer.calls for issuer in issuers) == 1
    clock.advance(timedelta(minutes=1))  # the backoff (1 h) ends: tried again
    again = replica.cycle()
    assert [(r.change.name, r.outcome) for r in again.results] == [("shop", "failed")]
    assert query(database_url, "SELECT failures FROM IssuanceBackoff WHERE name = 'shop'") == [(2,)]
