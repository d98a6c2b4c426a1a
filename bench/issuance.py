"""Benchmark: ACME issuance through ``apply`` against Pebble, N certificates of 3 names each.

    python bench/issuance.py [--sizes 20,100] [--concurrency 1,8] [--url ADMIN_URL] [--profile]

Pebble (Debian ``pebble``) runs with ``PEBBLE_VA_ALWAYS_VALID=1 PEBBLE_VA_NOSLEEP=1``, so the
protocol path is what is measured (the issue's reference figures were taken that way: certbot
0.34 certificates/s serially, lego 1.4/s serially and 3.7/s with 4 processes at N=100).

For each size N and concurrency C: a fresh migrated PostgreSQL database, a desired state of N
certificates (ECDSA P-256, 3 names each, an ``acme`` issuer on Pebble, local KMS), then the
same pipeline as ``certreconcile apply``: load, plan, ``apply_plan(concurrency=C)``. Every key
is generated, sealed by the KMS and stored; every step is journalled and audited. Reported:
the apply phase (from the first order to the last certificate stored), certificates/s, and
the ACME account registration (once per database) inside it, and the CPU time spent per
certificate by this process, by Pebble and by the rest of the machine (mostly PostgreSQL;
on a 2-core machine the sum bounds the rate). The applies are checked: N
certificates stored, none failed, the next plan empty.

Without ``--url`` (or ``CERTRECONCILE_TEST_DATABASE_URL``) a throw-away embedded PostgreSQL is started.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import cProfile
import json
import os
import pstats
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql

from certreconcile.actual.embedded import EmbeddedPostgres
from certreconcile.actual.migrate import upgrade
from certreconcile.actual.model import Observations
from certreconcile.actual.repository import PostgresStore
from certreconcile.apply.executor import apply_plan
from certreconcile.clock import SystemClock
from certreconcile.desired import load_desired
from certreconcile.plan import build_plan
from certreconcile.wiring import Settings, build_environment

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from acme_servers import make_tls_bundle
from kms_servers import free_port_outside_ephemeral

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


def write_desired(directory: Path, count: int, acme_directory: str, ca: Path, http01: int) -> None:
    lines = [
        "kms: {local: {}}",
        "issuers:",
        "  pebble:",
        "    acme:",
        f"      directory: {acme_directory}",
        f"      ca_bundle: {ca}",
        f'      http01: {{standalone: {{listen: "127.0.0.1:{http01}"}}}}',
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


def run_once(admin: str, scratch: Path, acme: tuple[str, Path, int, int], count: int, concurrency: int,
             profile: bool) -> dict[str, float]:  # fmt: skip
    directory = scratch / f"repo-{count}-{concurrency}"
    acme_directory, ca, http01, pebble_pid = acme
    write_desired(directory, count, acme_directory, ca, http01)
    url = fresh_database(admin, f"certreconcile_bench_issuance_{count}_{concurrency}")
    store = PostgresStore(url)
    settings = Settings(
        desired_dir=directory,
        data_dir=directory / ".certreconcile",
        database_url=url,
        env={"CERTRECONCILE_LOCAL_KMS_KEY_FILE": str(scratch / "kms.key"), "USER": "bench"},
    )
    desired = load_desired(directory)
    clock = SystemClock()
    env = build_environment(desired, settings, store, clock)
    with store.session() as session:
        actual = session.load_actual()
    plan = build_plan(desired, actual, Observations(), clock.now())
    assert len(plan.changes) == count
    profiler = cProfile.Profile() if profile else None
    start = time.perf_counter()
    cpu_start = (time.process_time(), process_cpu(pebble_pid), machine_cpu())
    if profiler:
        profiler.enable()
    result = apply_plan(plan, desired, env, concurrency=concurrency)
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    elapsed = time.perf_counter() - start
    cpu_end = (time.process_time(), process_cpu(pebble_pid), machine_cpu())
    ours, pebbles, machine = (end - begin for end, begin in zip(cpu_end, cpu_start, strict=True))
    assert result.ok, [failure.message for failure in result.failures[:3]]
    with store.session() as session:
        after = session.load_actual()
        audited = len(session.audit_events(name=None, action="issued", limit=count + 10))
    assert len(after.certificates) == count
    assert audited == count
    assert build_plan(desired, after, Observations(), clock.now()).is_empty
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM Certificate WHERE key_ref LIKE '%PRIVATE KEY%'").fetchone()
    assert row == (0,)

    return {
        "seconds": elapsed,
        "per_second": count / elapsed,
        "ours_ms": 1000 * ours / count,
        "pebble_ms": 1000 * pebbles / count,
        "rest_ms": 1000 * max(0.0, machine - ours - pebbles) / count,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="20,100")
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--url", default=None, help="admin URL of a PostgreSQL server (may CREATE DATABASE)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of each apply")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    levels = [int(level) for level in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory(prefix="certreconcile-bench-") as temporary:
        scratch = Path(temporary)
        admin = admin_url(args, scratch)
        with pebble(scratch / "pebble") as acme:
            print("CPU ms per certificate: certreconcile's process, Pebble, the rest of the machine (PostgreSQL)")
            print(f"{'N':>5} {'concurrency':>11} {'apply (s)':>10} {'certificates/s':>15} {'ours':>6} "
                  f"{'pebble':>6} {'rest':>6}")  # fmt: skip
            for count in sizes:
                for concurrency in levels:
                    figures = run_once(admin, scratch, acme, count, concurrency, args.profile)
                    cpu = f"{figures['ours_ms']:>6.1f} {figures['pebble_ms']:>6.1f} {figures['rest_ms']:>6.1f}"
                    rate = f"{figures['seconds']:>10.2f} {figures['per_second']:>15.1f}"
                    print(f"{count:>5} {concurrency:>11} {rate} {cpu}")


if __name__ == "__main__":
    main()
