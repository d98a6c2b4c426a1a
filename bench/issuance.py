"""Benchmark: ACME issuance through ``apply`` against Pebble, N certificates of 3 names each.

    python bench/issuance.py [--sizes 100] [--workers 1,2,4] [--concurrency 8 | --threads-total 8]
                             [--repeat 3] [--url ADMIN_URL] [--profile]

Pebble (Debian ``pebble``) runs with ``PEBBLE_VA_ALWAYS_VALID=1 PEBBLE_VA_NOSLEEP=1``, so the
protocol path is what is measured (the issue's reference figures were taken that way: certbot
0.34 certificates/s serially, lego 1.4/s serially and 3.7/s with 4 processes at N=100).

For each size N, worker count W and concurrency C: a fresh migrated PostgreSQL database, a desired
state of N certificates (ECDSA P-256, 3 names each, an ``acme`` issuer on Pebble answering HTTP-01
by webroot, local KMS), then the same pipeline as ``certreconcile apply --workers W --concurrency C``:
load, plan, ``engine.apply``. W = 1 is today's single process (C threads); W > 1 starts W worker
processes of C threads each (``certreconcile.apply.workers``: a fork server, each worker building its
own store, KMS and issuer, taking change indexes from this process). By default 8 threads in all
(``--threads-total 8``: 8, 4 and 2 per worker at W = 1, 2, 4: the same orders in flight, so the rows
differ by the processes only); ``--concurrency C`` gives C per worker instead. Each run has a Pebble
of its own: Pebble 2.4's store stopped answering a few times (every handler waiting on its lock, with
one to four client processes); a watchdog kills a Pebble that spends no CPU for 10 s while orders
are out, and such a run is taken again once, said on stderr. Every key is generated, sealed by
the KMS and stored; every step is journalled and audited. The applies are checked: N certificates
stored, each audited as issued once, none failed, the next plan empty, no key in plaintext.

Reported (the median of ``--repeat`` runs): the apply phase (from the first order to the last
certificate stored, the workers' start and the ACME account registration inside), certificates/s,
and the CPU time per certificate of each part of the machine: the worker processes (their sum, as
they report it at their end), this process (the parent: planning is outside the span; it hands out
changes and collects results, or does all the work when W = 1), the fork server (its start and
imports, paid once per ``apply`` command, and the forks), Pebble, PostgreSQL (postmaster and
backends, live and exited, from /proc: local servers only), the rest of the machine (other
programs: the load the figures were taken under) and the stack's total (all but the rest). ``cores``
is the stack's CPU over the wall time: on a 2-core machine, near 2 means the machine bounds the rate.

``--profile``: yappi on the CPU clock, every thread of this process and of every worker process (each
saves its statistics at its end; they are merged here), then the top functions by own CPU time.
Profiling slows everything: take the rates from runs without it.

Without ``--url`` (or ``CERTRECONCILE_TEST_DATABASE_URL``) a throw-away embedded PostgreSQL is started.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from certreconcile import engine
from certreconcile.actual.embedded import EmbeddedPostgres
from certreconcile.actual.migrate import upgrade
from certreconcile.actual.model import Observations
from certreconcile.actual.repository import PostgresStore
from certreconcile.apply.executor import ApplyEnvironment
from certreconcile.clock import SystemClock
from certreconcile.desired import load_desired
from certreconcile.desired.model import DesiredState
from certreconcile.plan import build_plan
from certreconcile.wiring import ProcessWiring, Settings, build_environment

# The test helpers (they import pytest) are imported where used: every worker process imports this
# script again (it is the main module), and must not pay for pytest.
TESTS = Path(__file__).resolve().parents[1] / "tests"
ENV_TEST_DATABASE_URL = "CERTRECONCILE_TEST_DATABASE_URL"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def pebble(workdir: Path) -> Iterator[tuple[str, Path, int, int]]:
    binary = shutil.which("pebble")
    if binary is None:
        sys.exit("pebble is not installed: apt-get install pebble (or `make test`, which installs it)")
    sys.path.insert(0, str(TESTS))
    from acme_servers import make_tls_bundle
    from kms_servers import free_port_outside_ephemeral

    ca, cert, key = make_tls_bundle(workdir / "tls")
    port, management, tls = free_port(), free_port(), free_port()
    http01 = free_port_outside_ephemeral()  # the standalone solver binds it for every order
    config = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{port}",
            "managementListenAddress": f"127.0.0.1:{management}",
            "certificate": str(cert),
            "privateKey": str(key),
            "httpPort": http01,
            "tlsPort": tls,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    (workdir / "pebble.json").write_text(json.dumps(config))
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PEBBLE_VA_ALWAYS_VALID": "1",
        "PEBBLE_VA_NOSLEEP": "1",
        "PEBBLE_WFE_NONCEREJECT": "0",
        "PEBBLE_AUTHZREUSE": "0",  # every order validates its own authorizations: the full path
    }
    log = (workdir / "pebble.log").open("wb")
    process = subprocess.Popen(
        [binary, "-config", str(workdir / "pebble.json"), "-dnsserver", "127.0.0.1:1"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    directory = f"https://127.0.0.1:{port}/dir"
    context = ssl.create_default_context(cafile=str(ca))
    try:
        for _ in range(300):
            try:
                with urllib.request.urlopen(directory, context=context, timeout=2):
                    break
            except OSError:
                time.sleep(0.05)
        else:
            sys.exit(f"pebble did not start: {(workdir / 'pebble.log').read_text()[-2000:]}")
        yield directory, ca, http01, process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def write_desired(directory: Path, count: int, acme_directory: str, ca: Path, http01: int, *,
                  webroot: Path | None = None) -> None:  # fmt: skip
    """N certificates on Pebble; HTTP-01 by the standalone listener on ``http01``, or by ``webroot``."""
    answer = f"{{webroot: {{path: {webroot}}}}}" if webroot else f'{{standalone: {{listen: "127.0.0.1:{http01}"}}}}'
    lines = [
        "kms: {local: {}}",
        "issuers:",
        "  pebble:",
        "    acme:",
        f"      directory: {acme_directory}",
        f"      ca_bundle: {ca}",
        f"      http01: {answer}",
        "certificates:",
    ]
    for index in range(count):
        lines += [
            f"  - name: cert-{index:04d}",
            f"    domains: [svc-{index}.bench.test, www.svc-{index}.bench.test, api.svc-{index}.bench.test]",
            "    issuer: pebble",
        ]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "certificates.yaml").write_text("\n".join(lines) + "\n")


def admin_url(args: argparse.Namespace, scratch: Path) -> str:
    """``--url``, else a throw-away embedded PostgreSQL stopped at exit.

    Its data lives in a folder of its own, not in ``scratch``: the benches' ``scratch`` is a
    ``TemporaryDirectory`` removed before ``atexit`` runs, and ``stop`` finds no ``postmaster.pid``
    in a removed folder, so the server outlived the bench.
    """
    if args.url or os.environ.get(ENV_TEST_DATABASE_URL):
        return str(args.url or os.environ[ENV_TEST_DATABASE_URL])
    home = Path(tempfile.mkdtemp(prefix="certreconcile-bench-pg-"))
    atexit.register(shutil.rmtree, home, True)  # registered first, so it runs after the stop
    server = EmbeddedPostgres(home)
    url = server.ensure_running()
    atexit.register(server.stop)
    return url


def fresh_database(admin: str, name: str) -> str:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = psycopg.conninfo.make_conninfo(admin, dbname=name)
    with psycopg.connect(url, autocommit=True) as conn:
        upgrade(conn)
    return url


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of one process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> float:
    """CPU seconds spent busy by the whole machine so far (all cores), from /proc/stat."""
    values = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def postgres_cpu(url: str) -> Callable[[], float]:
    """A reader of the server's CPU seconds so far: the postmaster, its exited (reaped) and live children.

    A backend's time moves into the postmaster's ``cutime``/``cstime`` when it exits, so the sum counts
    the connections opened and closed in between. 0 for a server that is not on this machine.
    """
    with psycopg.connect(url) as conn:  # the backend's parent is read while the backend lives
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        try:
            postmaster = Path(f"/proc/{row[0] if row else 0}/stat").read_text().rpartition(")")[2].split()[1]
        except OSError:
            return lambda: 0.0
    tick = os.sysconf("SC_CLK_TCK")

    def read() -> float:
        total = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if entry.name == postmaster:
                total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
            elif fields[1] == postmaster:
                total += int(fields[11]) + int(fields[12])
        return total / tick

    return read


def fork_server_cpu() -> float:
    """CPU seconds of multiprocessing's fork server (the workers' parent), 0 when none runs."""
    from multiprocessing import forkserver

    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
    if not pid:
        return 0.0
    with contextlib.suppress(OSError):
        return process_cpu(pid)
    return 0.0


def stop_fork_server() -> float:
    """Stop the fork server (the next apply starts its own, as every ``apply`` command does); its CPU."""
    from multiprocessing import forkserver

    spent = fork_server_cpu()
    stop = getattr(forkserver._forkserver, "_stop", None)
    if stop is not None:
        stop()
    return spent


@contextlib.contextmanager
def pebble_watchdog(pid: int, quiet: float = 10.0) -> Iterator[None]:
    """Kill Pebble when it spends no CPU for ``quiet`` seconds while orders are out (its store's lock-up):
    the requests in flight then fail at once, instead of each waiting out its 30 s timeout."""
    done = threading.Event()

    def watch() -> None:
        last, since = -1.0, time.monotonic()
        while not done.wait(1.0):
            with contextlib.suppress(OSError):
                spent = process_cpu(pid)
                if spent != last:
                    last, since = spent, time.monotonic()
                elif time.monotonic() - since > quiet:
                    os.kill(pid, signal.SIGKILL)
                    return

    watcher = threading.Thread(target=watch, name="pebble-watchdog", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()


class PebbleStuck(Exception):
    """Pebble stopped answering (its store's lock, under many clients): the run is taken again."""


@dataclass(frozen=True)
class ProfilingWiring:
    """The workers' wiring, with yappi on every thread of the worker; statistics saved at its end."""

    inner: ProcessWiring
    out: Path

    def build(self, desired: DesiredState) -> ApplyEnvironment:
        import yappi

        yappi.set_clock_type("cpu")
        yappi.start(builtins=False, profile_threads=True)
        return self.inner.build(desired)

    def finish(self, env: ApplyEnvironment) -> None:
        import yappi

        self.inner.finish(env)
        yappi.stop()
        yappi.get_func_stats().save(str(self.out / f"worker-{os.getpid()}.ystat"), type="ystat")


@contextlib.contextmanager
def profiled(directory: Path | None) -> Iterator[None]:
    """yappi (CPU clock, every thread) around the apply; then the merged top functions of all processes."""
    if directory is None:
        yield
        return
    import yappi

    yappi.clear_stats()
    yappi.set_clock_type("cpu")
    yappi.start(builtins=False, profile_threads=True)
    try:
        yield
    finally:
        yappi.stop()
    stats = yappi.get_func_stats()
    workers = sorted(str(path) for path in directory.glob("worker-*.ystat"))
    if workers:
        stats.add(workers)
    print(f"\nyappi, CPU clock, every thread of this process and of {len(workers)} worker process(es);"
          " top 30 functions by own CPU time (tsub), seconds:")  # fmt: skip
    stats.sort("tsub", "desc").print_all(
        columns={0: ("name", 88), 1: ("ncall", 8), 2: ("tsub", 8), 3: ("ttot", 8)}, limit=30
    )
    for path in workers:
        Path(path).unlink()


def run_once(admin: str, scratch: Path, acme: tuple[str, Path, int, int], count: int, concurrency: int,
             profile: bool, *, workers: int = 1, http01: str = "standalone") -> dict[str, float]:  # fmt: skip
    """One apply of ``count`` certificates on a fresh database; its figures (see the module's text)."""
    name = f"repo-{count}-{workers}-{concurrency}"
    directory = scratch / name
    acme_directory, ca, http01_port, pebble_pid = acme
    webroot = scratch / "webroot" if http01 == "webroot" else None
    write_desired(directory, count, acme_directory, ca, http01_port, webroot=webroot)
    url = fresh_database(admin, f"certreconcile_bench_issuance_{count}_{workers}_{concurrency}")
    store = PostgresStore(url)
    variables = {"CERTRECONCILE_LOCAL_KMS_KEY_FILE": str(scratch / "kms.key"), "USER": "bench"}
    settings = Settings(directory, directory / ".certreconcile", url, {**os.environ, **variables})
    desired = load_desired(directory)
    clock = SystemClock()
    env = build_environment(desired, settings, store, clock)
    with store.session() as session:
        actual = session.load_actual()
    plan = build_plan(desired, actual, Observations(), clock.now())
    assert len(plan.changes) == count
    profile_dir = scratch / "profile" if profile else None
    wiring: Any = ProcessWiring(settings, clock, env.actor)
    if profile_dir is not None:
        profile_dir.mkdir(exist_ok=True)
        wiring = ProfilingWiring(wiring, profile_dir)
    postgres = postgres_cpu(url)
    start = time.perf_counter()
    cpu_start = (time.process_time(), fork_server_cpu(), process_cpu(pebble_pid), postgres(), machine_cpu())
    with profiled(profile_dir), pebble_watchdog(pebble_pid):
        result = engine.apply(plan, desired, env, concurrency=concurrency, workers=workers, wiring=wiring,
                              lifecycle=False)  # fmt: skip
    elapsed = time.perf_counter() - start
    forks = stop_fork_server() if workers > 1 else 0.0  # it exits with its CPU: read it before
    cpu_end = (time.process_time(), forks, process_cpu(pebble_pid), postgres(), machine_cpu())
    parent, fork_server, pebbles, postgreses, machine = (end - begin for end, begin in zip(cpu_end, cpu_start,
                                                                                          strict=True))  # fmt: skip
    if result.failures and all(failure.error_code == "acme-unreachable" for failure in result.failures):
        raise PebbleStuck(result.failures[0].message)
    assert result.ok, [failure.message for failure in result.failures[:3]]
    worker_cpu = sum(report.cpu_seconds or 0.0 for report in result.workers)
    worker_start = sum(report.start_cpu_seconds or 0.0 for report in result.workers)
    assert len(result.workers) == (workers if workers > 1 else 0)
    check_applied(store, url, desired, count)
    stack = worker_cpu + parent + fork_server + pebbles + postgreses
    per = 1000 / count
    return {
        "seconds": elapsed,
        "per_second": count / elapsed,
        "ours_ms": (worker_cpu + parent + fork_server) * per,  # the client: every process of certreconcile
        "workers_ms": worker_cpu * per,
        "worker_start_ms": worker_start * per,
        "parent_ms": parent * per,
        "fork_server_ms": fork_server * per,
        "pebble_ms": pebbles * per,
        "postgres_ms": postgreses * per,
        "rest_ms": max(0.0, machine - stack) * per,
        "total_ms": stack * per,
        "cores": stack / elapsed,
    }


def check_applied(store: PostgresStore, url: str, desired: DesiredState, count: int) -> None:
    """N certificates stored, each issued once (audited), the next plan empty, no private key in a row."""
    with store.session() as session:
        after = session.load_actual()
        audited = len(session.audit_events(name=None, action="issued", limit=count + 10))
    assert len(after.certificates) == count
    assert audited == count
    assert build_plan(desired, after, Observations(), SystemClock().now()).is_empty
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM Certificate WHERE key_ref LIKE '%PRIVATE KEY%'").fetchone()
    assert row == (0,)


COLUMNS = (
    "workers_ms",
    "worker_start_ms",
    "parent_ms",
    "fork_server_ms",
    "pebble_ms",
    "postgres_ms",
    "total_ms",
    "rest_ms",
)


def run_with_pebble(scratch: Path, admin: str, row: tuple[int, int, int], tag: str, profile: bool) -> dict[str, float]:
    """One run on a Pebble of its own; taken once more when Pebble stops answering (said on stderr)."""
    count, workers, concurrency = row
    for attempt in ("", "-again"):
        with pebble(scratch / f"pebble-{tag}-{count}-{workers}-{concurrency}{attempt}") as acme:
            try:
                return run_once(admin, scratch, acme, count, concurrency, profile, workers=workers, http01="webroot")
            except PebbleStuck as exc:
                if attempt:
                    raise
                print(f"Pebble stopped answering ({exc}); the run is taken again", file=sys.stderr)
    raise AssertionError("unreachable")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100")
    parser.add_argument("--workers", default="1,2,4", help="worker processes (1: in this process, as today)")
    parser.add_argument("--concurrency", default=None, help="threads per worker process (instead of --threads-total)")
    parser.add_argument(
        "--threads-total",
        type=int,
        default=8,
        metavar="T",
        help="T threads in all, T / W per worker: the same orders in flight at every W (default 8)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per row; the median is shown")
    parser.add_argument("--url", default=None, help="admin URL of a PostgreSQL server (may CREATE DATABASE)")
    parser.add_argument("--profile", action="store_true", help="yappi: every thread of every process (one run)")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    levels = [int(level) for level in args.concurrency.split(",")] if args.concurrency else []
    worker_counts = [int(count) for count in args.workers.split(",")]
    repeat = 1 if args.profile else max(1, args.repeat)
    with tempfile.TemporaryDirectory(prefix="certreconcile-bench-") as temporary:
        scratch = Path(temporary)
        admin = admin_url(args, scratch)
        configurations = [(n, w, c) for n in sizes for w in worker_counts for c in levels]
        if not levels:
            configurations = [(n, w, max(1, args.threads_total // w)) for n in sizes for w in worker_counts]
        print(f"Machine: {os.cpu_count()} cores; load average before: {os.getloadavg()[0]:.2f}. "
              f"Median of {repeat} run(s) per row. CPU ms per certificate.")  # fmt: skip
        # The rows take turns (a change of load touches all of them alike); each run has a Pebble of its own.
        runs: dict[tuple[int, int, int], list[dict[str, float]]] = {key: [] for key in configurations}
        for attempt in range(repeat):
            for count, workers, concurrency in configurations:
                print(f"run {attempt + 1}: N={count} workers={workers} threads={concurrency}...", file=sys.stderr)
                figures = run_with_pebble(scratch, admin, (count, workers, concurrency), f"{attempt}", args.profile)
                runs[(count, workers, concurrency)].append(figures)
                print(f"run {attempt + 1}: N={count} workers={workers} threads={concurrency}: "
                      f"{figures['per_second']:.1f}/s", file=sys.stderr)  # fmt: skip
        print()
        print("| N | workers | threads/worker | apply (s) | certificates/s | workers | of which start | parent "
              "| fork server | Pebble | PostgreSQL | total | rest of machine | cores |")  # fmt: skip
        print("|---:" * 14 + "|")
        for (count, workers, concurrency), done in runs.items():
            median = {key: statistics.median(run[key] for run in done) for key in done[0]}
            spread = f"{min(r['per_second'] for r in done):.0f}–{max(r['per_second'] for r in done):.0f}"
            rate = f"{median['per_second']:.1f}" + (f" ({spread})" if repeat > 1 else "")
            cpu = " | ".join(f"{median[key]:.1f}" for key in COLUMNS)
            print(f"| {count} | {workers} | {concurrency} | {median['seconds']:.2f} | {rate} | {cpu} "
                  f"| {median['cores']:.2f} |")  # fmt: skip
        print(f"\nLoad average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
