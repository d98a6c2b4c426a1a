"""Benchmark: `certreconcile run --once` on N certificates with nothing to do, with and without the schedule.

    python bench/run_cycle.py [--sizes 1000,10000] [--repeat 3] [--url ADMIN_URL] [--baseline-src DIR]

For each size N: the declarations and the matching stored state of ``bench/plan_scale.py`` (N
certificates on 200 files targets, 1 or 2 each), with a REAL certificate per name (one EC key signs
them all) stored as its ``cert_pem`` and fingerprint, and written as ``fullchain.pem`` into every target
it is declared on: every target serves what is stored, so each cycle finds nothing to do.

Timed, as whole processes (``run --once --dir D``, wall and CPU time, median of ``--repeat``):

* ``every target`` (``--verify-every 0``): every cycle reads and parses every ``fullchain.pem``, as
  ``run`` did before the verification schedule (and as ``plan --refresh`` still does);
* ``first cycle``: the schedule's file is empty: every target is probed, and the schedule written;
* ``nothing due``: the next cycles, within the hour: each file is stat-ed, none is opened;
* ``baseline`` (with ``--baseline-src DIR``, e.g. an export of the previous commit's ``src``): the old code.

And the cycle alone, in this process (no interpreter start, no imports): a new ``Reconciler`` (as
``run --once`` builds it: adapters, the schedule read from its file) and one ``cycle()``, timed with
``perf_counter``, with every target probed and with nothing due; and the next cycle of one reconciler
(a long-running ``run``: the schedule in memory, the declarations validated again only when a file
changed). Each cycle must be a ``noop``.

Without ``--url`` (or ``CERTRECONCILE_TEST_DATABASE_URL``) a throw-away embedded PostgreSQL is started.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import os
import pstats
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certreconcile.actual.repository import PostgresStore
from certreconcile.domain.certs import fingerprint_of_der
from cli_plan import Timing, cli_env, launch
from plan_scale import NOW, admin_url_and_server, declared, drop_database, fill_state, fresh_database, write_desired


def real_certificates(count: int) -> list[tuple[str, str, str]]:
    """(name, PEM, fingerprint) of a certificate per name, all signed by one key (fast, and real)."""
    key = ec.generate_private_key(ec.SECP256R1())
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench run CA")])
    made = []
    for index in range(count):
        cert = declared(index)
        built = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cert.domains[0])]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(index + 1)
            .not_valid_before(NOW - timedelta(days=1))
            .not_valid_after(NOW + timedelta(days=60))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in cert.domains]), critical=False)
            .sign(key, hashes.SHA256())
        )
        der = built.public_bytes(serialization.Encoding.DER)
        made.append((cert.name, built.public_bytes(serialization.Encoding.PEM).decode(), fingerprint_of_der(der)))
    return made


def set_up(admin_url: str, directory: Path, count: int) -> str:
    """The declarations, the stored state and the targets' files; returns the database URL."""
    write_desired(directory, count)
    url = fresh_database(admin_url)
    PostgresStore(url).upgrade()
    fill_state(url, count, 1000)
    made = real_certificates(count)
    with psycopg.connect(url) as conn, conn.cursor() as cursor:
        # One statement for all rows (an UPDATE per row took 12 s of set-up at 10,000).
        cursor.execute(
            "UPDATE Certificate c SET cert_pem = m.pem, chain_pem = '', fingerprint = m.fingerprint"
            " FROM unnest(%s::text[], %s::text[], %s::text[]) AS m(name, pem, fingerprint) WHERE c.name = m.name",
            ([name for name, _, _ in made], [pem for _, pem, _ in made], [fp for _, _, fp in made]),
        )
        cursor.execute(
            "UPDATE Distribution d SET fingerprint = c.fingerprint FROM Certificate c WHERE c.id = d.cert_id"
        )
    # The targets' directories (declared as out/t-NNN) live outside the declarations, as they would in
    # production: `out` is a symbolic link, which the loader's walk for *.yaml files does not follow.
    outside = directory.parent / "served"
    outside.mkdir()
    (directory / "out").symlink_to(outside)
    for index, (name, pem, _) in enumerate(made):
        for target in declared(index).targets:
            folder = outside / target / name
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "fullchain.pem").write_text(pem)
    return url


@dataclass
class Row:
    count: int
    label: str
    timings: list[Timing]

    def median(self, attribute: str) -> float:
        return statistics.median(getattr(timing, attribute) for timing in self.timings)


def run_argv(directory: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "certreconcile", "run", "--once", "--dir", str(directory), *extra]


def new_reconciler(directory: Path, settings: Any, store: Any, clock: Any, *, schedule: bool) -> Any:
    """A reconciler as ``run --once`` builds it (the schedule read from its file, when ``schedule``)."""
    from certreconcile.actual.schedule import VerificationSchedule
    from certreconcile.cli.commands.run import GitDesiredSource
    from certreconcile.reconciler import Reconciler
    from certreconcile.wiring import build_environment

    plan = VerificationSchedule(path=settings.data_dir / "verification-schedule.json") if schedule else None
    return Reconciler(GitDesiredSource(directory), store, lambda desired: build_environment(desired, settings, store,
                      clock), clock, settings=settings, schedule=plan)  # fmt: skip


def cycle_seconds(
    directory: Path, env: dict[str, str], *, schedule: bool, repeat: int, profile: bool = False, warm: bool = False
) -> list[Timing]:
    """Wall and CPU seconds of one cycle of a new in-process reconciler, ``repeat`` times (each must be a noop);
    ``warm``: the cycles after the first of one reconciler, as in a long-running ``run``."""
    from certreconcile.clock import FixedClock
    from certreconcile.reconciler import Reconciler
    from certreconcile.wiring import Settings, open_store

    settings = Settings.from_env(directory, env)
    store = open_store(settings)
    clock = FixedClock(NOW)
    seconds: list[Timing] = []
    kept: Reconciler | None = None
    for _ in range(repeat):
        if warm and kept is None:  # the first cycle of a running `run`, not timed
            kept = new_reconciler(directory, settings, store, clock, schedule=schedule)
            kept.cycle()
        profiler = cProfile.Profile() if profile else None
        if profiler is not None:
            profiler.enable()
        start, cpu = time.perf_counter(), time.process_time()
        reconciler = kept or new_reconciler(directory, settings, store, clock, schedule=schedule)
        result = reconciler.cycle()
        seconds.append(Timing(time.perf_counter() - start, time.process_time() - cpu, 0))
        if profiler is not None:
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
        if result.outcome != "noop" or result.deferred:
            raise AssertionError(f"expected a noop cycle, got {result.outcome}: {result.errors} {result.deferred}")
    return seconds


def measure(admin_url: str, count: int, repeat: int, baseline: Path | None, profile: bool) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="crrun") as temp:
        directory = Path(temp) / "desired"
        directory.mkdir()
        url = set_up(admin_url, directory, count)
        env = {**cli_env(url, Path(temp) / "pyc"), "CERTRECONCILE_DATA_DIR": str(Path(temp) / "data")}
        env["CERTRECONCILE_LOCAL_KMS_KEY_FILE"] = str(Path(temp) / "kms" / "master.key")
        if profile and os.environ.get("RUN_CYCLE_PROFILE_ONLY"):
            launch(run_argv(directory), env)
            cycle_seconds(directory, env, schedule=True, repeat=1, profile=True, warm=True)
            return []
        launch(run_argv(directory, "--verify-every", "0"), env)  # warm: bytecode, the KMS key file
        rows = [Row(count, "every target (--verify-every 0)", [
            launch(run_argv(directory, "--verify-every", "0"), env) for _ in range(repeat)])]  # fmt: skip
        if baseline is not None:
            old = {**env, "PYTHONPATH": str(baseline)}
            rows.append(Row(count, f"baseline ({baseline})", [launch(run_argv(directory), old) for _ in range(repeat)]))
        rows.append(Row(count, "first cycle (schedule empty)", [launch(run_argv(directory), env)]))
        rows.append(Row(count, "nothing due", [launch(run_argv(directory), env) for _ in range(repeat)]))
        cases = (("cycle only, every target", False, False), ("cycle only, nothing due", True, False),
                 ("next cycle of a running run, every target", False, True),
                 ("next cycle of a running run, nothing due", True, True))  # fmt: skip
        for label, schedule, warm in cases:
            timings = cycle_seconds(directory, env, schedule=schedule, repeat=repeat, warm=warm)
            rows.append(Row(count, label, timings))
        if profile:
            cycle_seconds(directory, env, schedule=True, repeat=1, profile=True, warm=True)
        drop_database(admin_url)
        return rows


def report(rows: list[Row], repeat: int) -> None:
    print(f"\n`run --once`, nothing to do (median of {repeat}; the first cycle: one run)")
    print(f"{'certificates':>12}  {'cycle':<44} {'wall s':>8} {'CPU s':>8} {'peak RSS MiB':>13}")
    for row in rows:
        print(
            f"{row.count:>12,}  {row.label:<44} {row.median('seconds'):>8.2f} {row.median('cpu'):>8.2f} "
            + (f"{row.median('maxrss_kib') / 1024:>13.0f}" if row.median("maxrss_kib") else f"{'-':>13}")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000", help="comma-separated certificate counts")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per case (the median is shown)")
    parser.add_argument("--url", help="admin URL (may CREATE DATABASE); default: a scratch server")
    parser.add_argument("--baseline-src", type=Path, help="a `src` directory of the code to compare with")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one nothing-due cycle per size")
    args = parser.parse_args()
    sizes = [int(size.replace("_", "")) for size in args.sizes.split(",") if size.strip()]
    baseline = args.baseline_src.resolve() if args.baseline_src else None
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="crrun-pg") as temp, contextlib.ExitStack() as stack:
        admin_url = admin_url_and_server(args, stack, Path(temp))
        print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs", flush=True)
        for count in sizes:
            rows += measure(admin_url, count, args.repeat, baseline, args.profile)
    report(rows, args.repeat)


if __name__ == "__main__":
    main()
