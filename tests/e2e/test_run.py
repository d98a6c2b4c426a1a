"""`certreconcile run`: renewals before the window closes, metrics over HTTP, replicas, shutdown.

Real PostgreSQL, local KMS, local CA (short-lived certificates), files target. The loop runs
in-process on a FixedClock where time matters (no waiting for certificates to age), and as
a real subprocess for signals.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client import start_http_server
from prometheus_client.parser import text_string_to_metric_families

from certreconcile.actual.repository import PostgresStore
from certreconcile.apply.metrics import ReconcilerMetrics
from certreconcile.cli.commands.run import GitDesiredSource
from certreconcile.clock import FixedClock
from certreconcile.desired.model import DesiredState
from certreconcile.plan.plan import Action
from certreconcile.reconciler import RENEWAL_ACTOR, LoopControl, Reconciler, run_forever
from certreconcile.wiring import Settings, build_environment

CERTIFICATES = """\
certificates:
  - name: shop
    domains: [shop.example.test]
    issuer: quick
    renew_before: 59m
    targets: [web]
  - name: api
    domains: [api.example.test]
    issuer: quick
    renew_before: 59m
    targets: [web]
"""


def write_desired(root: Path, certificates: str = CERTIFICATES, reload_command: str | None = None) -> Path:
    desired = root / "desired"
    desired.mkdir(exist_ok=True)
    reload = f"reload_command: {reload_command!r}" if reload_command else "reload_command: null"
    (desired / "base.yaml").write_text(
        "kms: {local: {}}\n"
        "issuers:\n"
        "  quick:\n"
        "    local_ca: {common_name: run test CA, lifetime: 1h}\n"
        "targets:\n"
        "  web:\n"
        f"    files: {{dir: deploy/web, {reload}}}\n"
        "policy:\n"
        "  allowed_domains: [example.test, '*.example.test']\n"
    )
    (desired / "certificates.yaml").write_text(certificates)
    (desired / ".gitignore").write_text("deploy/\n")  # tests turn it into a Git repository: keys stay out
    return desired


def settings_for(desired: Path, database_url: str, tmp_path: Path) -> Settings:
    env = {
        "CERTRECONCILE_DATABASE_URL": database_url,
        "CERTRECONCILE_LOCAL_KMS_KEY_FILE": str(tmp_path / "kms" / "master.key"),
        "USER": "e2e-tester",
    }
    return Settings.from_env(desired, env)


def reconciler_for(
    desired: Path,
    database_url: str,
    tmp_path: Path,
    clock: FixedClock,
    *,
    metrics: ReconcilerMetrics | None = None,
    apply_changes: bool = False,
    wrap_issuers: Callable[[Any], Any] | None = None,
) -> Reconciler:
    settings = settings_for(desired, database_url, tmp_path)
    store = PostgresStore(database_url)

    def environment(state: DesiredState) -> Any:
        env = build_environment(state, settings, store, clock)
        if wrap_issuers is not None:
            env = replace(env, issuers={name: wrap_issuers(issuer) for name, issuer in env.issuers.items()})
        return env

    return Reconciler(
        GitDesiredSource(desired), store, environment, clock, apply_changes=apply_changes, metrics=metrics
    )


def query(url: str, sql: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


def current_certs(url: str) -> dict[str, tuple[datetime, datetime, str]]:
    rows = query(
        url,
        "SELECT name, not_before, not_after, status FROM Certificate"
        " WHERE retired_at IS NULL AND status <> 'superseded' ORDER BY name",
    )
    return {name: (not_before, not_after, status) for name, not_before, not_after, status in rows}


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the condition")
        time.sleep(0.02)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture
def metrics_server() -> Iterator[tuple[ReconcilerMetrics, int]]:
    metrics = ReconcilerMetrics()
    server, thread = start_http_server(0, addr="127.0.0.1", registry=metrics.registry)
    try:
        yield metrics, server.server_port
    finally:
        server.shutdown()
        thread.join(5)


def test_run_renews_before_the_window_closes_and_serves_metrics(
    database_url: str, tmp_path: Path, metrics_server: tuple[ReconcilerMetrics, int]
) -> None:
    metrics, port = metrics_server
    desired = write_desired(tmp_path)
    clock = FixedClock(datetime.now(UTC).replace(microsecond=0))
    first = reconciler_for(desired, database_url, tmp_path, clock, apply_changes=True).cycle()
    assert sorted((r.change.action, r.outcome) for r in first.results) == [(Action.ISSUE, "done")] * 2
    issued = current_certs(database_url)

    # The loop, as `run` drives it: a short interval, on the fake clock.
    reconciler = reconciler_for(desired, database_url, tmp_path, clock, metrics=metrics)
    control = LoopControl()
    cycles: list[Any] = []
    loop = threading.Thread(
        target=run_forever,
        args=(reconciler.cycle,),
        kwargs={"interval": 0.05, "jitter": 0.5, "control": control, "on_cycle": cycles.append},
    )
    loop.start()
    try:
        wait_for(lambda: len(cycles) >= 2)
        assert all(not c.results and not c.errors for c in cycles)  # nothing is due yet
        assert current_certs(database_url) == issued

        clock.advance(timedelta(seconds=61))  # lifetime 1h, renew_before 59m (+ at most 12s jitter): due
        wait_for(lambda: len(query(database_url, "SELECT 1 FROM Certificate WHERE status = 'superseded'")) == 2)
        assert len(query(database_url, "SELECT 1 FROM CertAudit WHERE action = 'renewed'")) == 2
        renewed = current_certs(database_url)
        for name, (_, old_not_after, _) in issued.items():
            new_not_before, new_not_after, _ = renewed[name]
            assert new_not_before < old_not_after  # renewed while the old one was still valid
            assert new_not_after > old_not_after
            assert clock.now() < old_not_after  # ... and before its window closed
        actors = query(database_url, "SELECT DISTINCT actor FROM CertAudit WHERE action = 'renewed'")
        assert actors == [(RENEWAL_ACTOR,)]

        def labels(name: str) -> tuple[tuple[str, str], ...]:
            return (("issuer", "quick"), ("issuer_kind", "local_ca"), ("name", name))

        def metrics_current() -> bool:
            samples = scrape(port)
            return all(
                samples.get(("certreconcile_certificate_expiration_timestamp_seconds", labels(n)))
                == renewed[n][1].timestamp()
                and samples.get(("certreconcile_certificate_ready_status", (("condition", "True"), *labels(n)))) == 1.0
                for n in renewed
            )

        wait_for(metrics_current)
    finally:
        control.request_stop()
        loop.join(10)
    assert not loop.is_alive()

    samples = scrape(port)
    for name, (not_before, not_after, status) in current_certs(database_url).items():
        assert status == "active"
        labels = (("issuer", "quick"), ("issuer_kind", "local_ca"), ("name", name))
        for condition, value in (("True", 1.0), ("False", 0.0), ("Unknown", 0.0)):  # one series per condition
            assert samples[("certreconcile_certificate_ready_status", (("condition", condition), *labels))] == value
        assert samples[("certreconcile_certificate_not_before_timestamp_seconds", labels)] == not_before.timestamp()
        assert samples[("certreconcile_certificate_expiration_timestamp_seconds", labels)] == not_after.timestamp()
        renewal = samples[("certreconcile_certificate_renewal_timestamp_seconds", labels)]
        assert not_after.timestamp() - 3552 <= renewal <= not_after.timestamp() - 3540  # renew_before 59m, jitter
        assert samples[("certreconcile_target_verified_status", (("name", name), ("target", "web")))] == 1.0
    assert samples[("certreconcile_issuance_total", (("issuer", "quick"), ("reason", "renewal-window")))] == 2.0
    assert samples[("certreconcile_apply_duration_seconds_count", ())] >= 1.0
    assert samples[("certreconcile_reconcile_cycles_total", (("outcome", "success"),))] >= 1.0
    assert samples[("certreconcile_last_reconcile_timestamp_seconds", ())] > 0
    assert not any(name == "certreconcile_issuance_failures_total" for name, _ in samples)


class ContendedIssuer:
    """A real issuer that issues only once another replica waits for a name's lock.

    A replica applies only after planning all of its changes, so a waiter proves the other replica
    planned the same renewal before this one was issued: the race is certain, not a matter of speed.
    """

    def __init__(self, inner: Any, database_url: str) -> None:
        self._inner = inner
        self._database_url = database_url

    def issue(self, request: Any) -> Any:
        wait_for(self._someone_waits, timeout=60)
        return self._inner.issue(request)

    def _someone_waits(self) -> bool:
        waiting = query(
            self._database_url,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        return bool(waiting[0][0])

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_two_replicas_never_issue_the_same_renewal_twice(database_url: str, tmp_path: Path) -> None:
    desired = write_desired(tmp_path)
    clock = FixedClock(datetime.now(UTC).replace(microsecond=0))
    reconciler_for(desired, database_url, tmp_path, clock, apply_changes=True).cycle()
    replicas = [
        reconciler_for(desired, database_url, tmp_path, clock, wrap_issuers=lambda i: ContendedIssuer(i, database_url))
        for _ in range(2)
    ]
    rounds = 3
    for round_number in range(1, rounds + 1):
        clock.advance(timedelta(seconds=61))  # every certificate falls due again
        barrier = threading.Barrier(2)
        outcomes: list[Any] = [None, None]

        def replica(index: int) -> None:
            barrier.wait()  # both start planning together  # noqa: B023
            outcomes[index] = replicas[index].cycle()  # noqa: B023

        threads = [threading.Thread(target=replica, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert all(o is not None and not o.errors and not o.failures for o in outcomes)
        for name in ("api", "shop"):
            per_replica = sorted(r.outcome for o in outcomes for r in o.results if r.change.name == name)
            # Both planned the renewal; the lock made the second one find it done and skip it.
            assert per_replica == ["done", "skipped"], (round_number, name, per_replica)
            renewed = query(database_url, "SELECT count(*) FROM CertAudit WHERE action = 'renewed' AND name = %s", name)
            assert renewed == [(round_number,)]
            rows = query(database_url, "SELECT count(*) FROM Certificate WHERE name = %s", name)
            assert rows == [(round_number + 1,)]
        assert {status for _, _, status in current_certs(database_url).values()} == {"active"}


def test_declaration_changes_wait_for_apply_changes(database_url: str, tmp_path: Path) -> None:
    desired = write_desired(tmp_path)
    clock = FixedClock(datetime.now(UTC).replace(microsecond=0))
    upkeep_only = reconciler_for(desired, database_url, tmp_path, clock)
    first = upkeep_only.cycle()
    assert not first.results
    assert sorted((c.action, c.name) for c in first.deferred) == [(Action.ISSUE, "api"), (Action.ISSUE, "shop")]
    assert current_certs(database_url) == {}

    subprocess.run(["git", "init", "-q", "-b", "main", str(desired)], check=True)
    git = ["git", "-C", str(desired), "-c", "user.email=ops@example.test", "-c", "user.name=Ops"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "certificates"], check=True)
    sha = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    with_changes = reconciler_for(desired, database_url, tmp_path, clock, apply_changes=True)
    applied = with_changes.cycle()
    assert sorted((r.change.name, r.outcome) for r in applied.results) == [("api", "done"), ("shop", "done")]
    assert not applied.deferred
    actors = query(database_url, "SELECT DISTINCT actor FROM CertAudit WHERE action = 'issued'")
    assert actors == [(f"git:{sha} ops@example.test",)]

    # A domain added: a rotation the declarations asked for. Renewals still go ahead alone.
    (desired / "certificates.yaml").write_text(CERTIFICATES.replace("[api.example.test]", "[api.example.test, "
                                                                    "www.api.example.test]"))  # fmt: skip
    clock.advance(timedelta(seconds=61))  # both due for renewal too
    mixed = upkeep_only.cycle()
    assert [(r.change.name, r.change.action, r.outcome) for r in mixed.results] == [("shop", Action.ROTATE, "done")]
    assert [(c.name, c.action) for c in mixed.deferred] == [("api", Action.ROTATE)]
    assert "domains-changed" in {reason.code.value for reason in mixed.deferred[0].reasons}
    later = upkeep_only.cycle()
    assert not later.results and [c.name for c in later.deferred] == ["api"]  # reported every cycle

    done = with_changes.cycle()
    assert [(r.change.name, r.outcome) for r in done.results] == [("api", "done")]
    domains = query(database_url, "SELECT san_domains FROM Certificate WHERE name = 'api' AND status = 'active'")
    assert domains == [(["www.api.example.test"],)]


def _stderr_lines(process: subprocess.Popen[str], sink: list[str]) -> None:
    assert process.stderr is not None
    for line in process.stderr:
        sink.append(line)


def test_sigterm_finishes_the_cycle_in_flight_then_exits_0(
    database_url: str, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    marker = tmp_path / "reload-started"
    release = tmp_path / "reload-may-finish"
    # The reload holds the first cycle open until the test has sent SIGTERM (no guess at how long it takes).
    waits = f"while [ ! -e {release} ]; do sleep 0.01; done"
    desired = write_desired(tmp_path, reload_command=f"sh -c 'touch {marker}; {waits}'")
    command = [sys.executable, "-m", "certreconcile", "run", "--dir", str(desired), "--interval", "0.2"]
    process = subprocess.Popen(
        [*command, "--apply-changes", "--metrics-port", "0"],
        env=cli_env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=_stderr_lines, args=(process, lines), daemon=True)
    reader.start()
    try:
        wait_for(marker.exists, timeout=60)  # the first cycle is deploying (its reload waits)
        process.send_signal(signal.SIGTERM)
        wait_for(lambda: any("received SIGTERM" in line for line in lines), timeout=60)
        release.touch()  # now the cycle in flight may finish
        assert process.wait(timeout=60) == 0, "".join(lines)
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(5)
    log = "".join(lines)
    assert "received SIGTERM: stopping after the cycle in flight" in log
    assert "cycle success: 2 done" in log
    assert log.rstrip().endswith("stopped")
    assert "serving metrics on http://127.0.0.1:" in log
    # The cycle in flight completed: both certificates issued, deployed and verified.
    assert {status for _, _, status in current_certs(database_url).values()} == {"active"}
    assert len(query(database_url, "SELECT 1 FROM CertAudit WHERE action = 'verified'")) == 2


def test_run_once_with_a_git_ref_fetches_the_remote(database_url: str, tmp_path: Path, cli_env: dict[str, str]) -> None:
    upstream = tmp_path / "upstream"
    write_desired(tmp_path)
    (tmp_path / "desired").rename(upstream)
    git = ["git", "-c", "user.email=ops@example.test", "-c", "user.name=Ops"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(upstream)], check=True)
    subprocess.run([*git, "-C", str(upstream), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(upstream), "commit", "-q", "-m", "one"], check=True)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(upstream), str(clone)], check=True)
    # A new certificate lands upstream after the clone: only a fetch can see it.
    (upstream / "certificates.yaml").write_text(
        CERTIFICATES + "  - name: blog\n    domains: [blog.example.test]\n    issuer: quick\n    targets: [web]\n"
    )
    subprocess.run([*git, "-C", str(upstream), "commit", "-q", "-am", "two"], check=True)
    env = {**cli_env, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(tmp_path)}
    command = [sys.executable, "-m", "certreconcile", "run", "--dir", str(clone), "--ref", "origin/main", "--once"]
    without = subprocess.run(
        [*command, "--no-refresh"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert without.returncode == 0, without.stderr
    assert "3 declaration change(s) not applied" not in without.stderr
    assert "2 declaration change(s) not applied" in without.stderr  # origin/main as cloned: two names
    fetched = subprocess.run(
        [*command, "--git-pull", "--apply-changes"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert fetched.returncode == 0, fetched.stderr
    assert "cycle success: 3 done" in fetched.stderr
    assert sorted(current_certs(database_url)) == ["api", "blog", "shop"]
    assert not (clone / "certificates.yaml").read_text().count("blog")  # the work tree was not touched
    assert os.path.isdir(clone / ".git")


@pytest.mark.integration
def test_acme_requests_are_counted_by_endpoint_and_status(
    database_url: str, tmp_path: Path, pebble: Any, metrics_server: tuple[ReconcilerMetrics, int]
) -> None:
    from certreconcile.plugins.issuers.acme.client import set_request_observer

    metrics, port = metrics_server
    desired = tmp_path / "desired"
    desired.mkdir()
    (desired / "certificates.yaml").write_text(
        "kms: {local: {}}\n"
        "issuers:\n"
        "  pebble:\n"
        "    acme:\n"
        f"      directory: {pebble.directory_url}\n"
        "      email: ops@example.com\n"
        f"      ca_bundle: {pebble.ca_bundle}\n"
        f"      http01: {{standalone: {{listen: '127.0.0.1:{pebble.http01_port}'}}}}\n"
        "targets:\n"
        "  web: {files: {dir: out}}\n"
        "certificates:\n"
        "  - {name: shop, domains: [shop.example.com], issuer: pebble, targets: [web]}\n"
    )
    clock = FixedClock(datetime.now(UTC))
    set_request_observer(metrics.observe_acme_request)
    try:
        cycle = reconciler_for(desired, database_url, tmp_path, clock, metrics=metrics, apply_changes=True).cycle()
    finally:
        set_request_observer(None)
    assert [(r.change.name, r.outcome) for r in cycle.results] == [("shop", "done")], cycle
    samples = scrape(port)
    counted = {
        dict(labels)["endpoint"]: value
        for (name, labels), value in samples.items()
        if name == "certreconcile_acme_requests_total"
    }
    for endpoint in ("directory", "newNonce", "newAccount", "newOrder", "authz", "challenge", "finalize", "cert"):
        assert counted.get(endpoint, 0) >= 1, (endpoint, counted)
    assert "other" not in counted
    statuses = {dict(labels)["status"] for (name, labels) in samples if name == "certreconcile_acme_requests_total"}
    assert statuses <= {"200", "201", "204"}
    timed = {
        dict(labels)["endpoint"]: value
        for (name, labels), value in samples.items()
        if name == "certreconcile_acme_request_duration_seconds_count"
    }
    assert timed == counted  # every answer counted was timed too, on both transports (urllib3 and requests)
    assert samples[("certreconcile_issuance_total", (("issuer", "pebble"), ("reason", "new-certificate")))] == 1.0


def test_two_run_processes_share_renewals_of_short_lived_certificates(
    database_url: str, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    # lifetime 1h (the shortest allowed; 1h1m with the CA's backdate) and renew_before 3590s: due 3 to
    # 10 seconds after issuance, on the test clock: each process starts at CERTRECONCILE_TEST_NOW and its
    # sleeps between cycles move its clock on.
    certificates = CERTIFICATES.replace("renew_before: 59m", "renew_before: 3590s")
    desired = write_desired(tmp_path, certificates)
    env = {**cli_env, "CERTRECONCILE_TEST_NOW": datetime.now(UTC).replace(microsecond=0).isoformat()}
    command = [sys.executable, "-m", "certreconcile"]
    subprocess.run([*command, "apply", "--dir", str(desired), "--auto-approve"], env=env, cwd=tmp_path,
                   check=True, capture_output=True)  # fmt: skip
    replicas = [
        subprocess.Popen(
            [*command, "run", "--dir", str(desired), "--interval", "1", "--jitter", "50%"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        wait_for(lambda: len(query(database_url, "SELECT 1 FROM CertAudit WHERE action = 'renewed'")) >= 4, timeout=60)
    finally:
        for process in replicas:
            process.send_signal(signal.SIGTERM)
        logs = [process.communicate(timeout=60)[1] for process in replicas]
    assert [process.returncode for process in replicas] == [0, 0], logs
    # Every certificate was replaced at most once, by exactly one rotation: no renewal was issued twice.
    assert query(database_url, "SELECT cert_id FROM CertRotation GROUP BY cert_id HAVING count(*) > 1") == []
    for name in ("api", "shop"):
        (certificates_count,) = query(database_url, "SELECT count(*) FROM Certificate WHERE name = %s", name)[0]
        (renewed,) = query(database_url, "SELECT count(*) FROM CertAudit WHERE action = 'renewed' AND name = %s", name)[
            0
        ]
        assert certificates_count == renewed + 1
        (superseded,) = query(
            database_url, "SELECT count(*) FROM Certificate WHERE name = %s AND status = 'superseded'", name
        )[0]
        assert superseded >= certificates_count - 2  # all but the newest (and one rotation in flight at SIGTERM)
    assert all("cycle " in log for log in logs)  # both replicas ran cycles
