"""Crash injection: SIGKILL ``apply`` at journalled steps and at random moments; a rerun converges.

The world (once per module): Pebble issuing over HTTP-01, the local KMS, a files target and a
real nginx, four declared certificates. A prepared database holds state A (alpha and beta
issued and served); every scenario starts from a copy of it (database and target directories)
and applies state B, which rotates beta (a domain added) and issues gamma and delta, with
alpha untouched. The apply is killed (tests/crash_harness.py says how), rerun until it exits 0
(at most 3 reruns), and then every invariant must hold: one current, active certificate per
declared name, one valid ACME order per name and change (any other order of the change invalid
at the CA: a kill during HTTP-01 validation takes the standalone responder down, the CA marks
that order invalid for good and the rerun must order again), no order at Pebble that the
journal does not know, every certificate's key opens and matches it, every target verified
and serving it (TLS handshake to nginx), no open rotation, the audit consistent with the
journal and its hash chain intact, no temporary file left.

``make test`` kills at every step of the first change (a rotation) and the first step of the
next, plus a few random moments; ``make soak`` (marker ``soak``) kills at every journalled
step of the whole apply and at 30 random moments. ``CERTRECONCILE_CRASH_SEED`` replays the
random moments of a failed run (the seed is in every failure message; where a random kill
lands still depends on the machine's speed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import random
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from acme_servers import ChallTestSrv, Pebble, start_pebble
from certreconcile.plugins.targets.handshake import observe_served
from certreconcile.plugins.targets.safe_files import TEMP_PREFIX
from crash_harness import (
    Kill,
    World,
    arm_gate,
    clone_database,
    committed_with,
    converge,
    describe,
    invariants,
    journal,
    kill_after,
    kill_at_gate,
    last_step_id,
    start_apply,
)
from web_servers import Nginx, run_nginx

pytestmark = pytest.mark.integration

STATE_A = {"alpha": ("alpha.crash.test",), "beta": ("beta.crash.test",)}
STATE_B = {
    "alpha": ("alpha.crash.test",),
    "beta": ("beta.crash.test", "www.beta.crash.test"),
    "delta": ("delta.crash.test",),
    "gamma": ("gamma.crash.test",),
}
CHANGED = ("beta", "delta", "gamma")  # beta rotates (a domain added), delta and gamma are issued
TARGETS = ("files", "edge")
_databases = itertools.count()


def desired(pebble: Pebble, nginx: Nginx, files_dir: Path, names: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    return {
        "kms": {"local": {}},
        "issuers": {
            "pebble": {
                "acme": {
                    "directory": pebble.directory_url,
                    "email": "ops@example.com",
                    "ca_bundle": str(pebble.ca_bundle),
                    "http01": {"standalone": {"listen": f"127.0.0.1:{pebble.http01_port}"}},
                    "order_timeout": "60s",
                }
            }
        },
        "targets": {
            "files": {"files": {"dir": str(files_dir)}},
            "edge": {
                "nginx": {
                    "cert_dir": str(nginx.cert_dir),
                    "pid_file": str(nginx.pid_file),
                    "test_command": nginx.test_command,
                },
                "verify": nginx.address,
                "verify_timeout": "20s",
            },
        },
        "certificates": [
            {"name": name, "domains": list(domains), "issuer": "pebble", "targets": list(TARGETS)}
            for name, domains in names.items()
        ],
    }


@dataclasses.dataclass
class Lab:
    """The shared world, the prepared state A (a template database and the target folders), the tally."""

    world: World
    nginx: Nginx
    template: str
    snapshot: Path
    kills: list[Kill] = dataclasses.field(default_factory=list)
    reruns: list[int] = dataclasses.field(default_factory=list)
    pebble_log: Path = Path()
    clean_steps: list[tuple[int, str, str, str]] = dataclasses.field(default_factory=list)
    clean_together: list[tuple[int, int]] = dataclasses.field(default_factory=list)  # committed_with(), clean run
    replaced: int = 0  # orders placed again because the CA had invalidated the killed apply's order
    orphaned: int = 0  # orders the CA made that no journal knows (the killed apply never recorded them)
    run_seconds: float = 0.0  # a clean default apply, from recording its run to its last journalled step

    def pebble_orders(self) -> int:
        """Orders Pebble created so far (its log says so for each one)."""
        return self.pebble_log.read_text().count("Added order ")

    def reset_targets(self) -> None:
        """Put state A back on the targets: the files and nginx folders, and nginx serving them."""
        for name, directory in (("files", self.world.files_dir), ("nginx", self.world.nginx_cert_dir)):
            shutil.rmtree(directory)
            shutil.copytree(self.snapshot / name, directory)
        os.kill(self.nginx.master_pid, signal.SIGHUP)
        deadline = time.monotonic() + 20
        for name, domains in STATE_B.items():
            expected = _fingerprint(self.world.nginx_cert_dir / name / "cert.pem")
            while observe_served(self.world.nginx_address, domains).fingerprint != expected:
                assert time.monotonic() < deadline, f"nginx did not serve state A's {name} again"
                time.sleep(0.02)
        # The old worker may still answer a few handshakes while it drains: state A is only in place
        # once it is gone (else the run under test could observe state B there and skip a deployment).
        self.nginx.drained()

    @contextlib.contextmanager
    def scenario_database(self) -> Iterator[str]:
        self.reset_targets()
        name = f"crash_{os.getpid()}_{next(_databases)}"
        with clone_database(self.world.admin_url, self.template, name) as url:
            yield url


def _fingerprint(path: Path) -> str:
    from certreconcile.domain.certs import read_cert_facts

    return read_cert_facts(path.read_text()).fingerprint


@pytest.fixture(scope="module")
def lab(
    challtestsrv: ChallTestSrv, pg_server: str, migrated_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lab]:
    base = tmp_path_factory.mktemp("crash")
    files_dir, repo = base / "files", base / "repo"
    repo.mkdir()
    with (
        start_pebble(base / "pebble", challtestsrv.dns_address) as pebble,  # its own: its log counts the orders
        run_nginx(base / "nginx", STATE_B, base / "nginx-certs") as nginx,
    ):
        world = World(
            admin_url=pg_server, repo=repo, files_dir=files_dir, nginx_cert_dir=nginx.cert_dir,
            nginx_address=nginx.address, nginx_master_pid=nginx.master_pid, kms_key_file=base / "kms" / "master.key",
            ca_bundle=pebble.ca_bundle,
            declared=STATE_B, targets=TARGETS,
        )  # fmt: skip
        template = f"crash_prep_{os.getpid()}"
        with clone_database(pg_server, migrated_template, template) as url:
            (repo / "certificates.yaml").write_text(yaml.safe_dump(desired(pebble, nginx, files_dir, STATE_A)))
            result = start_apply(world, url)
            output = result.communicate(timeout=300)[0]
            assert result.returncode == 0, output
            (repo / "certificates.yaml").write_text(yaml.safe_dump(desired(pebble, nginx, files_dir, STATE_B)))
            snapshot = base / "snapshot"
            shutil.copytree(files_dir, snapshot / "files")
            shutil.copytree(nginx.cert_dir, snapshot / "nginx")
            yield Lab(world, nginx, template, snapshot, pebble_log=base / "pebble" / "pebble.log")


@pytest.fixture(scope="module")
def clean_run(lab: Lab) -> Lab:
    """State A → B without a kill: the journal one change at a time writes (the steps to kill at),
    and how long a default apply (changes in parallel) works from recording its run to its last step."""
    with lab.scenario_database() as url:
        base = last_step_id(url)
        process = start_apply(lab.world, url, "--concurrency", "1")
        output = process.communicate(timeout=300)[0]
        assert process.returncode == 0, output
        lab.clean_steps = journal(url, base)
        lab.clean_together = committed_with(url, base)
        assert invariants(lab.world, url) == []
    with lab.scenario_database() as url, psycopg.connect(url, autocommit=True) as conn:
        process = start_apply(lab.world, url)
        recorded, rows, last_row = None, 0, time.monotonic()
        while process.poll() is None:
            seen = conn.execute("SELECT (SELECT count(*) FROM ApplyRun), (SELECT count(*) FROM ApplyStep)").fetchone()
            assert seen is not None
            if recorded is None and seen[0] != 1:
                recorded = time.monotonic()
            if seen[1] != rows:
                rows, last_row = seen[1], time.monotonic()
            time.sleep(0.002)
        assert process.returncode == 0, process.communicate()[0]
        assert recorded is not None
        lab.run_seconds = last_row - recorded
    return lab


def _report(request: pytest.FixtureRequest, lab: Lab, what: str, kills: list[Kill], problems: list[str]) -> None:
    missed = [kill for kill in kills if kill.exited_before]  # the apply had ended: not counted as a kill
    landed = [kill for kill in kills if not kill.exited_before]
    failed = {kill.label for kill in landed if any(p.startswith(f"{kill.label} (") for p in problems)}
    at_random = [kill for kill in landed if kill.label.startswith("random")]
    line = (
        f"crash injection ({what}): kills injected {len(landed)} ({len(landed) - len(at_random)} at journalled"
        f" steps, {len(at_random)} at random moments; {len(missed)} more came after the apply had ended),"
        f" survived {len(landed) - len(failed)},"
        f" duplicate orders {sum('ACME orders' in p for p in problems)},"
        f" lost keys {sum('does not open' in p or 'does not match' in p for p in problems)},"
        f" orders placed again after the CA invalidated the killed apply's order {lab.replaced},"
        f" orders left pending at the CA, never recorded (the xfail's known gap) {lab.orphaned},"
        f" most reruns needed {max(lab.reruns[-len(kills) :], default=0)}"
        + (
            f"; random moments drawn in [0, {lab.run_seconds:.3f} s] after the run was recorded"
            if missed or at_random
            else ""
        )
    )
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        print(f"\n{line}")
        for kill in kills:
            print(f"  {kill.label}: aimed at {kill.aimed}; the journal then ended at {kill.landed}"
                  f" ({kill.rows_at_kill} rows at the kill, {kill.rows_after} after)")  # fmt: skip


def _survive(lab: Lab, url: str, kill: Kill, orders_before: int, base: int, *, orphans_fail: bool = False) -> list[str]:
    """Rerun to convergence; every invariant broken. An order the CA made that the journal does not
    know (the known gap of the xfail test) is counted, and a problem only with ``orphans_fail``."""
    lab.kills.append(kill)
    lab.reruns.append(converge(lab.world, url, kill.label))
    problems = invariants(lab.world, url)
    made = lab.pebble_orders() - orders_before
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(DISTINCT detail->>'order_url') FROM ApplyStep WHERE step = 'order-created' AND id > %s",
            (base,),
        ).fetchone()
    journalled = int(row[0]) if row else 0
    lab.orphaned += made - journalled
    if made < journalled or (made > journalled and orphans_fail):
        problems.append(
            f"{made} ACME orders at Pebble, {journalled} journalled: {made - journalled} unknown to the journal"
        )
    lab.replaced += journalled - len(CHANGED)
    return [f"{kill.label} ({kill.aimed}, landed at {kill.landed}): {p}" for p in problems]


def _kill_at_steps(lab: Lab, indices: range) -> tuple[list[Kill], list[str]]:
    kills: list[Kill] = []
    problems: list[str] = []
    for index in indices:
        aimed = describe(lab.clean_steps, index)
        with lab.scenario_database() as url:
            base = arm_gate(url, index)
            orders = lab.pebble_orders()
            process = start_apply(lab.world, url, "--concurrency", "1")
            kill = kill_at_gate(url, process, f"kill@{index}", aimed, base)
            # Exact: the aimed row is the journal's last (or, journalled in a transaction, rolled back with it);
            # rows written together (a fan-out's, one statement) are committed or rolled back together.
            first, last = lab.clean_together[index - 1] if index else (0, 0)
            assert kill.rows_after in (last, first - 1) and kill.rows_at_kill == max(first - 1, 0), kill
            kills.append(kill)
            problems += _survive(lab, url, kill, orders, base)
    return kills, problems


def _kill_at_random(lab: Lab, count: int, seed: int, *extra: str) -> tuple[list[Kill], list[str]]:
    rng = random.Random(seed)
    kills: list[Kill] = []
    problems: list[str] = []
    for number in range(2 * count):  # until ``count`` kills landed while the apply ran (bounded)
        if sum(not kill.exited_before for kill in kills) == count:
            break
        delay = rng.uniform(0.0, lab.run_seconds)
        with lab.scenario_database() as url:
            base = last_step_id(url)
            orders = lab.pebble_orders()
            process = start_apply(lab.world, url, *extra)
            kill = kill_after(url, process, f"random#{number} (seed {seed})", delay, base)
            kills.append(kill)
            problems += _survive(lab, url, kill, orders, base)
            if kill.exited_before:  # this machine is faster now than during the clean run: narrow the window
                lab.run_seconds = delay
    return kills, problems


def _seed() -> int:
    configured = os.environ.get("CERTRECONCILE_CRASH_SEED")
    return int(configured) if configured else random.SystemRandom().randrange(1 << 32)


def _first_change_and_one_more(steps: list[tuple[int, str, str, str]]) -> range:
    """Every step of the first certificate's change, and the first step of the next one."""
    first = steps[0][1]
    end = next((i for i, row in enumerate(steps) if row[1] != first), len(steps))
    return range(0, min(end + 1, len(steps)) + 1)


def test_the_clean_run_journals_the_steps_the_kills_aim_at(clean_run: Lab) -> None:
    steps = [(name, step, state) for _, name, step, state in clean_run.clean_steps]
    assert ("beta", "completed", "done") in steps
    for name in ("beta", "delta", "gamma"):
        assert (name, "order-created", "done") in steps, steps
        assert (name, "verify:edge", "done") in steps, steps
    assert not [row for row in steps if row[0] == "alpha"], steps  # untouched: never journalled


def test_the_invariants_catch_what_they_promise(clean_run: Lab) -> None:
    """The checker is not blind: after a clean apply, break one promise of each kind and see it named."""
    world = clean_run.world
    with clean_run.scenario_database() as url:
        process = start_apply(world, url)
        assert process.wait(timeout=300) == 0, process.communicate()[0]
        assert invariants(world, url) == []
        (world.files_dir / "beta" / f"{TEMP_PREFIX}cert.pem.0123456789abcdef").write_bytes(b"")
        with psycopg.connect(url, autocommit=True) as conn:
            ids = dict(conn.execute("SELECT name, id FROM Certificate WHERE status = 'active'").fetchall())
            conn.execute(  # a second order for beta's change, valid at the CA (gamma's)
                "INSERT INTO ApplyStep (run_id, idempotency_key, name, step, state, detail)"
                " SELECT b.run_id, b.idempotency_key, b.name, b.step, b.state, g.detail FROM ApplyStep b, ApplyStep g"
                " WHERE b.name = 'beta' AND b.step = 'order-created' AND g.name = 'gamma' AND g.step = 'order-created'"
            )
            conn.execute(
                "UPDATE Certificate SET key_ref = (SELECT key_ref FROM Certificate WHERE id = %s) WHERE id = %s",
                (ids["alpha"], ids["gamma"]),
            )
            conn.execute("INSERT INTO CertRotation (cert_id) VALUES (%s)", (ids["alpha"],))
            conn.execute("UPDATE Distribution SET verified_at = NULL WHERE cert_name = 'delta' AND target = 'files'")
        found = "\n".join(invariants(world, url))
    for expected in (
        "temporary file left",
        "beta: 2 ACME orders for one change",  # both valid at the CA  # both valid at the CA
        "gamma: key of certificate",
        "1 rotation(s) still open",
        "delta: files not verified",
    ):
        assert expected in found, found


@pytest.mark.xfail(
    strict=True,
    reason="known gap: ACME newOrder has no idempotency key, so an order the CA created but the journal never"
    " recorded (a kill between the CA's answer and the AcmeOrder row) is unknown to the rerun, which orders"
    " again; the first order stays pending at the CA until it expires and issues nothing. Closing it means"
    " looking the order up through the account's orders list (RFC 8555 7.1.2.1), which Let's Encrypt does"
    " not implement: not a small, local fix",
)
def test_kill_after_the_ca_created_the_order_and_before_the_journal_recorded_it(clean_run: Lab) -> None:
    lab = clean_run
    with lab.scenario_database() as url:
        base = arm_gate(url, None, at_order=True)
        orders = lab.pebble_orders()
        process = start_apply(lab.world, url, "--concurrency", "1")
        kill = kill_at_gate(url, process, "kill@order", "the first AcmeOrder row (beta's order, at the CA)", base)
        assert lab.pebble_orders() - orders == 1  # the CA made it, the journal does not know it
        problems = _survive(lab, url, kill, orders, base, orphans_fail=True)
    assert problems == []


def test_kill_at_every_step_of_a_rotation_and_at_random_moments(clean_run: Lab, request: pytest.FixtureRequest) -> None:
    clean_run.replaced = clean_run.orphaned = 0  # figures of this test only
    seed = _seed()
    kills, problems = _kill_at_steps(clean_run, _first_change_and_one_more(clean_run.clean_steps))
    more, more_problems = _kill_at_random(clean_run, 3, seed)
    _report(request, clean_run, "make test", kills + more, problems + more_problems)
    assert problems + more_problems == [], f"seed {seed}:\n" + "\n".join(problems + more_problems)


@pytest.mark.soak
def test_soak_kill_at_every_journalled_step(clean_run: Lab, request: pytest.FixtureRequest) -> None:
    clean_run.replaced = clean_run.orphaned = 0  # figures of this test only
    kills, problems = _kill_at_steps(clean_run, range(len(clean_run.clean_steps) + 1))
    _report(request, clean_run, "every journalled step", kills, problems)
    assert problems == [], "\n".join(problems)


@pytest.mark.soak
def test_soak_kill_at_random_moments(clean_run: Lab, request: pytest.FixtureRequest) -> None:
    clean_run.replaced = clean_run.orphaned = 0  # figures of this test only
    seed = _seed()
    kills, problems = _kill_at_random(clean_run, 30, seed)  # four changes in parallel (the default)
    _report(request, clean_run, f"random moments, seed {seed}", kills, problems)
    assert problems == [], f"seed {seed}:\n" + "\n".join(problems)
