"""Crash injection for ``certreconcile apply``: SIGKILL at a journalled step or at a random moment.

Used by tests/e2e/test_crash_injection.py. The real CLI runs as a subprocess against a real
PostgreSQL database, Pebble (ACME, HTTP-01 standalone), the local KMS, a files target and a real
nginx. Nothing in ``src`` knows about it:

* **At a journalled step** (:func:`arm_gate`, :func:`kill_at_gate`): the test installs, in the
  scenario's own database, a trigger on ``ApplyRun`` and ``ApplyStep``. When the N-th row of the
  run is inserted (N = 0: the ``ApplyRun`` row, N >= 1: the N-th ``ApplyStep`` row), the
  trigger waits for an advisory lock the test holds. The test sees the apply's backend waiting
  on it, SIGKILLs the apply, then lets the lock go. So the kill lands exactly after step N was
  written and before anything the apply does next, however loaded the machine is. A step
  journalled inside a larger transaction (``certificate-stored``, ``completed``) is then rolled
  back with it: that is a kill just before that transaction commits.
* **At a random moment** (:func:`kill_after`): SIGKILL after a delay drawn from a seeded RNG.

After a kill, :func:`converge` reruns ``apply`` until it exits 0 (at most 3 reruns), and
:func:`invariants` lists every broken promise (an empty list: all hold).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import psycopg
from psycopg import sql

from certreconcile.actual.repository import PostgresStore
from certreconcile.apply.executor import certificate_context
from certreconcile.audit.verify import verify_chain
from certreconcile.crypto.envelope import key_ref_from_json, open_envelope
from certreconcile.crypto.keys import load_private_key, public_key_matches
from certreconcile.domain.certs import read_cert_facts
from certreconcile.plugins.kms.local import LocalKms
from certreconcile.plugins.targets.handshake import observe_served
from certreconcile.plugins.targets.safe_files import TEMP_PREFIX
from helpers import with_database
from web_servers import wait_drained

__all__ = [
    "GATE_LOCK",
    "Kill",
    "World",
    "arm_gate",
    "clone_database",
    "converge",
    "invariants",
    "journal",
    "kill_after",
    "kill_at_gate",
    "replaced_orders",
    "start_apply",
]

GATE_LOCK = 7_424_242  # the advisory lock the gate waits on (held by the test)
_POLL = 0.002  # seconds between looks at pg_locks while waiting for the gate

_GATE_SQL = """
CREATE TABLE crash_gate (target INT, base BIGINT NOT NULL, at_order BOOLEAN NOT NULL DEFAULT FALSE);
INSERT INTO crash_gate VALUES (NULL, 0);
CREATE FUNCTION crash_gate_wait() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    gate crash_gate;
    seen BIGINT;
BEGIN
    SELECT * INTO gate FROM crash_gate;
    IF TG_TABLE_NAME = 'acmeorder' THEN
        IF gate.at_order THEN
            PERFORM pg_advisory_xact_lock(%(lock)s);
        END IF;
        RETURN NULL;
    END IF;
    IF gate.target IS NULL THEN
        RETURN NULL;
    END IF;
    IF TG_TABLE_NAME = 'applyrun' THEN
        seen := 0;
    ELSE
        -- This row's place in the run (a statement writing several rows fires once per row, in order).
        SELECT count(*) INTO seen FROM ApplyStep WHERE id > gate.base AND id <= NEW.id;
    END IF;
    IF seen = gate.target THEN
        PERFORM pg_advisory_xact_lock(%(lock)s);
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER crash_gate_run AFTER INSERT ON ApplyRun FOR EACH ROW EXECUTE FUNCTION crash_gate_wait();
CREATE TRIGGER crash_gate_step AFTER INSERT ON ApplyStep FOR EACH ROW EXECUTE FUNCTION crash_gate_wait();
CREATE TRIGGER crash_gate_order AFTER INSERT ON AcmeOrder FOR EACH ROW EXECUTE FUNCTION crash_gate_wait();
"""


@dataclasses.dataclass(frozen=True)
class World:
    """What every scenario shares: the servers and the declaration."""

    admin_url: str
    repo: Path  # the desired-state directory
    files_dir: Path  # the files target's directory
    nginx_cert_dir: Path
    nginx_address: str
    nginx_master_pid: int  # its old worker must be gone before what it serves is compared
    kms_key_file: Path
    ca_bundle: Path  # trusted for the ACME directory's TLS
    declared: Mapping[str, tuple[str, ...]]  # name -> domains
    targets: tuple[str, ...]

    def env(self, database_url: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CERTRECONCILE_")}
        env.update(
            CERTRECONCILE_DATABASE_URL=database_url,
            CERTRECONCILE_LOCAL_KMS_KEY_FILE=str(self.kms_key_file),
            NO_COLOR="1",
            USER="crash-tester",
        )
        return env


@dataclasses.dataclass(frozen=True)
class Kill:
    """One SIGKILL: where it was aimed and where it landed."""

    label: str
    aimed: str  # "step 7 (order-created done of beta)" or "after 1.234 s"
    landed: str  # the journal's last row when the process died
    rows_at_kill: int  # ApplyStep rows of the killed run when it was killed
    rows_after: int  # ... once the killed backend had gone
    exited_before: bool = False  # the apply finished before the kill could land


def cli(world: World, database_url: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "certreconcile", *args, "--dir", str(world.repo)],
        capture_output=True, text=True, env=world.env(database_url), cwd=world.repo.parent, timeout=timeout,
        check=False,
    )  # fmt: skip


def start_apply(world: World, database_url: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "certreconcile", "apply", "--dir", str(world.repo), "--auto-approve", *extra],
        env=world.env(database_url), cwd=world.repo.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip


@contextlib.contextmanager
def clone_database(admin_url: str, template: str, name: str) -> Iterator[str]:
    """A new database copied from ``template`` (which nobody may be connected to), dropped afterwards."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
    try:
        yield with_database(admin_url, name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def journal(database_url: str, after_id: int = 0) -> list[tuple[int, str, str, str]]:
    """``(id, name, step, state)`` of every ApplyStep row after ``after_id``, in order."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT id, name, step, state FROM ApplyStep WHERE id > %s ORDER BY id", (after_id,)
        ).fetchall()
    return [(int(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows]


def committed_with(database_url: str, after_id: int = 0) -> list[tuple[int, int]]:
    """For each ApplyStep row after ``after_id`` (in order), the 1-based places of the first and the last
    row written by its transaction (rows journalled together, as a fan-out's: one statement)."""
    with psycopg.connect(database_url) as conn:
        xids = [row[0] for row in conn.execute("SELECT xmin::text FROM ApplyStep WHERE id > %s ORDER BY id",
                                               (after_id,))]  # fmt: skip
    places = []
    for index, xid in enumerate(xids):
        first = index
        while first > 0 and xids[first - 1] == xid:
            first -= 1
        last = index
        while last + 1 < len(xids) and xids[last + 1] == xid:
            last += 1
        places.append((first + 1, last + 1))
    return places


def last_step_id(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT coalesce(max(id), 0) FROM ApplyStep").fetchone()
    return int(row[0]) if row else 0


def arm_gate(database_url: str, target: int | None, *, at_order: bool = False) -> int:
    """Install the gate (once per database) and aim it at the ``target``-th row of the next run,
    or (``at_order``) at the first ``AcmeOrder`` row: after the CA created the order, before it is recorded."""
    base = last_step_id(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('crash_gate')").fetchone() == (None,):
            conn.execute(_GATE_SQL.replace("%(lock)s", str(GATE_LOCK)))  # type: ignore[arg-type]
        conn.execute("UPDATE crash_gate SET target = %s, base = %s, at_order = %s", (target, base, at_order))
    return base


def _gate_waiter(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = %s", (GATE_LOCK,)
    ).fetchone()
    return bool(row and row[0])


def kill_at_gate(database_url: str, process: subprocess.Popen[str], label: str, aimed: str, base: int) -> Kill:
    """Hold the gate's lock until the apply waits on it, SIGKILL the apply, then open the gate."""
    with psycopg.connect(database_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (GATE_LOCK,))
        deadline = time.monotonic() + 240
        exited = False
        while not _gate_waiter(holder):
            if process.poll() is not None:
                exited = True
                break
            if time.monotonic() > deadline:
                process.kill()
                raise AssertionError(f"{label}: the apply never reached {aimed}")
            time.sleep(_POLL)
        at_kill = len(journal(database_url, base))
        process.send_signal(signal.SIGKILL)
        output = process.communicate(timeout=30)[0]
        holder.execute("UPDATE crash_gate SET target = NULL, at_order = FALSE")  # armed for no later run
        holder.execute("SELECT pg_advisory_unlock(%s)", (GATE_LOCK,))
        _wait_backends_gone(holder)
    if exited:
        raise AssertionError(f"{label}: the apply ended before {aimed}: {output[-2000:]}")
    rows = journal(database_url, base)
    landed = f"{rows[-1][2]} {rows[-1][3]} of {rows[-1][1]}" if rows else "(no step)"
    return Kill(label, aimed, landed, at_kill, len(rows))


def kill_after(database_url: str, process: subprocess.Popen[str], label: str, delay: float, base: int) -> Kill:
    """SIGKILL ``delay`` seconds after the apply recorded its run (before that it has written nothing)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        runs = conn.execute("SELECT count(*) FROM ApplyRun").fetchone()
        deadline = time.monotonic() + 120
        while conn.execute("SELECT count(*) FROM ApplyRun").fetchone() == runs and process.poll() is None:
            assert time.monotonic() < deadline, f"{label}: the apply recorded no run within 120 s"
            time.sleep(_POLL)
    time.sleep(delay)  # the random moment is the point of this kill
    at_kill = len(journal(database_url, base))
    exited = process.poll() is not None
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    with psycopg.connect(database_url, autocommit=True) as conn:
        _wait_backends_gone(conn)
    rows = journal(database_url, base)
    landed = f"{rows[-1][2]} {rows[-1][3]} of {rows[-1][1]}" if rows else "(no step)"
    return Kill(label, f"after {delay:.3f} s", landed, at_kill, len(rows), exited_before=exited)


def _wait_backends_gone(conn: psycopg.Connection[tuple[object, ...]], timeout: float = 30) -> None:
    """The killed apply's backends notice the closed socket and end; wait for that (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
        if row == (0,):
            return
        time.sleep(0.01)
    raise AssertionError("the killed apply's database sessions did not end within 30 s")


def converge(world: World, database_url: str, label: str) -> int:
    """Rerun ``apply`` until it exits 0 (at most 3 reruns), then ``plan`` must show no change."""
    outputs = []
    for attempt in range(1, 4):
        result = cli(world, database_url, "apply", "--auto-approve")
        outputs.append(f"--- rerun {attempt}: exit {result.returncode}\n{result.stdout[-1500:]}{result.stderr[-1500:]}")
        if result.returncode == 0:
            break
    else:
        raise AssertionError(f"{label}: apply did not converge in 3 reruns\n" + "\n".join(outputs))
    plan = cli(world, database_url, "plan", "--detailed-exitcode")
    assert plan.returncode == 0, f"{label}: plan after convergence: exit {plan.returncode}\n{plan.stdout}{plan.stderr}"
    return attempt


def invariants(world: World, database_url: str) -> list[str]:
    """Every broken promise after a converged rerun (empty: all hold)."""
    problems: list[str] = []
    with psycopg.connect(database_url) as conn:
        current = _current_certificates(conn, world, problems)
        problems += _order_problems(conn, world)
        problems += _key_problems(conn, world)
        problems += _distribution_problems(conn, world, current)
        problems += _rotation_problems(conn)
        problems += _audit_problems(conn)
    with PostgresStore(database_url).session() as session:
        report = verify_chain(session)  # type: ignore[arg-type]
    if not report.intact:
        problems.append(f"audit chain broken: {report.problem}")
    problems += _served_problems(world, current)
    return problems


def _current_certificates(
    conn: psycopg.Connection[tuple[object, ...]], world: World, problems: list[str]
) -> dict[str, tuple[str, str]]:
    """name -> (id, fingerprint) of its one live certificate; every deviation goes to ``problems``."""
    rows = conn.execute(
        "SELECT name, id::text, fingerprint, status, domain, san_domains FROM Certificate"
        " WHERE status IN ('issued','active','expiring_soon','rotating') AND retired_at IS NULL ORDER BY name"
    ).fetchall()
    current: dict[str, tuple[str, str]] = {}
    for name, cert_id, fingerprint, status, domain, sans in rows:
        if name in current:
            problems.append(f"{name}: more than one current certificate")
        current[str(name)] = (str(cert_id), str(fingerprint))
        if status != "active":
            problems.append(f"{name}: current certificate is {status}, not active")
        if name in world.declared and (domain, *sans) != world.declared[str(name)]:  # type: ignore[misc]
            problems.append(f"{name}: current certificate is for {(domain, *sans)}")  # type: ignore[misc]
    for name in world.declared:
        if name not in current:
            problems.append(f"{name}: no current certificate")
    return current


def _order_problems(conn: psycopg.Connection[tuple[object, ...]], world: World) -> list[str]:
    """At most one ACME order per name and change, unless the CA invalidated the earlier ones.

    A kill while the CA validates an HTTP-01 challenge takes the standalone responder down with
    the apply: the CA marks that order invalid (final, RFC 8555 §7.1.6) and the rerun must order
    again. So each change may have several orders, but the CA (asked with the account's key)
    must say exactly one is valid and every other one invalid; two valid orders are a duplicate.
    """
    rows = conn.execute(
        "SELECT name, idempotency_key, array_agg(DISTINCT detail->>'order_url') FROM ApplyStep"
        " WHERE step = 'order-created' GROUP BY name, idempotency_key"
    ).fetchall()
    problems: list[str] = []
    statuses = _ca_order_statuses(conn, world, [url for *_, urls in rows for url in urls if len(urls) > 1])  # type: ignore[attr-defined]
    for name, key, urls in rows:
        if len(urls) < 2:  # type: ignore[arg-type]
            continue
        seen = sorted(statuses[url] for url in urls)  # type: ignore[attr-defined]
        if seen.count("valid") != 1 or any(status not in ("valid", "invalid") for status in seen):
            problems.append(f"{name}: {len(seen)} ACME orders for one change ({str(key)[:12]}), at the CA {seen}")
    stored = conn.execute(
        "SELECT name, idempotency_key, count(DISTINCT detail->>'cert_id') FROM ApplyStep"
        " WHERE step = 'certificate-stored' GROUP BY name, idempotency_key"
        " HAVING count(DISTINCT detail->>'cert_id') > 1"
    ).fetchall()
    problems += [f"{name}: {count} certificates stored for one change" for name, _, count in stored]
    return problems


def replaced_orders(database_url: str) -> int:
    """Orders journalled beyond the first of their change (each one found invalid at the CA)."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(DISTINCT detail->>'order_url') AS n FROM ApplyStep"
            " WHERE step = 'order-created' GROUP BY idempotency_key) AS orders"
        ).fetchone()
    return int(row[0]) if row else 0  # type: ignore[call-overload]


def _ca_order_statuses(
    conn: psycopg.Connection[tuple[object, ...]], world: World, urls: Sequence[str]
) -> dict[str, str]:
    """Each order's status at the CA, read (POST-as-GET) with the account key the apply stored."""
    if not urls:
        return {}
    from acme import messages
    from josepy import jwa, jwk

    from certreconcile.plugins.issuers.acme import acme_account_context
    from certreconcile.plugins.issuers.acme.client import AcmeConnection

    row = conn.execute("SELECT directory_url, key_ref, account_url FROM AcmeAccount").fetchone()
    assert row is not None, "orders without an ACME account"
    directory_url, key_ref, account_url = (str(value) for value in row)
    kms = LocalKms(world.kms_key_file, create=False)
    key = load_private_key(open_envelope(kms, key_ref_from_json(key_ref), acme_account_context(directory_url)))
    directory = AcmeConnection.fetch_directory(directory_url, str(world.ca_bundle))
    connection = AcmeConnection(directory, jwk.JWKEC(key=key), jwa.ES256, str(world.ca_bundle))
    connection.use_account(account_url)
    return {url: str(messages.Order.from_json(connection.post_as_get(url).json()).status.name) for url in urls}


def _key_problems(conn: psycopg.Connection[tuple[object, ...]], world: World) -> list[str]:
    """Every certificate row has its encrypted key, and that key opens and matches the certificate."""
    kms = LocalKms(world.kms_key_file, create=False)
    problems = []
    for name, cert_id, key_ref, cert_pem in conn.execute("SELECT name, id::text, key_ref, cert_pem FROM Certificate"):
        try:
            key_pem = open_envelope(kms, key_ref_from_json(str(key_ref)), certificate_context(str(cert_id)))
        except Exception as exc:  # any failure is a lost key
            problems.append(f"{name}: key of certificate {cert_id} does not open: {type(exc).__name__}")
            continue
        if not public_key_matches(str(cert_pem), load_private_key(key_pem)):
            problems.append(f"{name}: key of certificate {cert_id} does not match it")
    return problems


def _distribution_problems(
    conn: psycopg.Connection[tuple[object, ...]], world: World, current: Mapping[str, tuple[str, str]]
) -> list[str]:
    problems = []
    rows = {
        (str(r[0]), str(r[1])): r[2:]
        for r in conn.execute(
            "SELECT cert_name, target, cert_id::text, fingerprint, verified_at, last_error FROM Distribution"
        )
    }
    for name in world.declared:
        for target in world.targets:
            row = rows.get((name, target))
            if row is None or name not in current:
                problems.append(f"{name}: no distribution to {target}")
                continue
            cert_id, fingerprint, verified_at, last_error = row
            if (cert_id, fingerprint) != current[name] or verified_at is None or last_error is not None:
                problems.append(f"{name}: {target} not verified with the current certificate ({last_error})")
    return problems


def _rotation_problems(conn: psycopg.Connection[tuple[object, ...]]) -> list[str]:
    open_rotations = conn.execute("SELECT count(*) FROM CertRotation WHERE completed_at IS NULL").fetchone()
    rotating = conn.execute("SELECT name FROM Certificate WHERE status = 'rotating'").fetchall()
    problems = [f"{open_rotations[0]} rotation(s) still open"] if open_rotations and open_rotations[0] else []
    return problems + [f"{row[0]}: a certificate stuck in 'rotating'" for row in rotating]


def _audit_problems(conn: psycopg.Connection[tuple[object, ...]]) -> list[str]:
    """Each stored certificate has one issued/renewed event; each verified step its verified event."""
    problems = []
    stored = conn.execute(
        "SELECT s.name, s.detail->>'cert_id', (SELECT count(*) FROM CertAudit a"
        " WHERE a.cert_id::text = s.detail->>'cert_id' AND a.action IN ('issued','renewed'))"
        " FROM ApplyStep s WHERE s.step = 'certificate-stored'"
    ).fetchall()
    problems += [
        f"{name}: certificate {cert} stored with {n} issued/renewed events" for name, cert, n in stored if n != 1
    ]
    certs = conn.execute(
        "SELECT c.name, (SELECT count(*) FROM CertAudit a WHERE a.cert_id = c.id AND a.action IN ('issued','renewed'))"
        " FROM Certificate c"
    ).fetchall()
    problems += [f"{name}: a certificate with {n} issued/renewed events" for name, n in certs if n != 1]
    verified = conn.execute(
        "SELECT s.name, split_part(s.step, ':', 2) FROM ApplyStep s WHERE s.step LIKE 'verify:%' AND NOT EXISTS ("
        " SELECT 1 FROM CertAudit a WHERE a.name = s.name AND a.action = 'verified'"
        " AND a.detail->>'target' = split_part(s.step, ':', 2))"
    ).fetchall()
    problems += [f"{name}: verify:{target} journalled without a verified event" for name, target in verified]
    return problems


def _served_problems(world: World, current: Mapping[str, tuple[str, str]]) -> list[str]:
    problems = []
    wait_drained(world.nginx_master_pid)
    for directory in (world.files_dir, world.nginx_cert_dir):
        problems += [f"temporary file left: {p}" for p in directory.rglob(f"{TEMP_PREFIX}*")]
    for name, domains in world.declared.items():
        expected = current.get(name, ("", ""))[1]
        for directory in (world.files_dir, world.nginx_cert_dir):
            cert_file = directory / name / "cert.pem"
            found = read_cert_facts(cert_file.read_text()).fingerprint if cert_file.exists() else None
            if found != expected:
                problems.append(f"{name}: {cert_file} holds {found and found[:12]}, not {expected[:12]}")
        served = observe_served(world.nginx_address, tuple(domains)).fingerprint
        if served != expected:
            problems.append(f"{name}: nginx serves {served and served[:12]}, not {expected[:12]}")
    return problems


def describe(rows: Sequence[tuple[int, str, str, str]], index: int) -> str:
    """The ``index``-th row of a run (0: the ApplyRun row) in words."""
    if index == 0:
        return "step 0 (the apply run recorded)"
    _, name, step, state = rows[index - 1]
    return f"step {index} ({step} {state} of {name})"


def dump(value: object) -> str:
    return json.dumps(value, default=str)
