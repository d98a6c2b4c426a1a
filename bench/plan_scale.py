"""Benchmark: `plan` end to end on 1,000 / 10,000 / 100,000 certificates with nothing to do.

    python bench/plan_scale.py [--sizes 1000,10000,100000] [--repeat 5] [--url ADMIN_URL] [--profile]

For each size N it writes a desired-state directory (one file of issuers, targets and
policy, plus 10 files of certificates: 3 domains each, 2 local_ca issuers, 200 files
targets, every certificate on 1 or 2 of them) and fills a fresh, migrated PostgreSQL
database with the MATCHING actual state, by COPY: one ``active`` Certificate row per
name (same domains, issuer, key type, on_delete, issuer fingerprint; renewal not due at
``NOW``; a dummy KMS envelope as ``key_ref``; a random PEM-sized ``cert_pem``) and one
verified Distribution row per (certificate, target) whose ``target_fingerprint`` is the
declared target's. ``build_plan`` must then return an empty plan (asserted).

Measured, median of ``--repeat`` runs, each run as ``certreconcile plan`` does it:

* ``load_desired``: read + parse + validate the YAML (``certreconcile.desired.load_desired``);
* ``connect``: open a session (one new connection) with ``PostgresStore.session()``;
* ``load_actual``: ``session.load_actual()``;
* ``build_plan``: ``certreconcile.plan.build_plan`` (after the session is closed, as the CLI does);
* ``total``: wall time of the four together.

Database round trips during ``load_actual`` are counted by wrapping psycopg's
``Cursor.execute/executemany/stream/copy``, ``ServerCursor.execute/fetch*/scroll``,
``Connection.commit/rollback`` and ``Transaction`` enter/exit (re-entrant calls count once),
and checked once against the wire: a libpq trace of the session's connection, counting
the server's ReadyForQuery messages (one per completed round trip).

Memory, measured in runs of their own (never in the timed runs):

* ``tracemalloc peak``: the peak of Python-heap allocations over the whole pipeline
  (not libpq's result buffers, which are C ``malloc``);
* ``peak RSS growth``: the process's peak RSS (VmHWM, reset through ``/proc/self/clear_refs``)
  after the pipeline minus its RSS before it, in a fresh child process (imports done,
  before ``load_desired``): the real peak growth, libpq buffers included. Not
  ``ru_maxrss``: Linux carries that over ``execve`` from the (large) parent.

Without ``--url`` (or ``CERTRECONCILE_TEST_DATABASE_URL``) a throw-away embedded PostgreSQL is
started in a temporary directory. ``--url`` must be a role that may CREATE DATABASE.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import cProfile
import functools
import hashlib
import json
import os
import pstats
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from certreconcile.actual.embedded import EmbeddedPostgres
from certreconcile.actual.model import ActualState, Observations
from certreconcile.actual.repository import PostgresStore
from certreconcile.desired import load_desired, plugin_fingerprint
from certreconcile.desired.model import DesiredState
from certreconcile.plan import Plan, build_plan
from certreconcile.plugins.issuers.local_ca_config import LocalCaConfig
from certreconcile.plugins.targets.files_config import FilesTargetConfig

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
TARGET_COUNT = 200
CERT_FILES = 10
BENCH_DB = "certreconcile_plan_scale"
ENV_TEST_DATABASE_URL = "CERTRECONCILE_TEST_DATABASE_URL"

# Plugin declarations: written to YAML as flow mappings, and validated here with the
# same pydantic models to compute the fingerprints the database rows must carry.
ISSUERS: dict[str, dict[str, str]] = {
    "ca-a": {"common_name": "bench CA A", "lifetime": "90d"},
    "ca-b": {"common_name": "bench CA B", "lifetime": "90d", "ca_lifetime": "3650d"},
}


def target_name(index: int) -> str:
    return f"t-{index:03d}"


def target_config(index: int) -> dict[str, str]:
    return {"dir": f"out/{target_name(index)}"}


# ---------------------------------------------------------------- the declarations


@dataclass(frozen=True, slots=True)
class Declared:
    name: str
    domains: tuple[str, str, str]
    issuer: str
    key: str
    renew_before: str
    targets: tuple[str, ...]  # sorted, like CertificateSpec.targets
    on_delete: str


def declared(index: int) -> Declared:
    first = index % TARGET_COUNT
    if index % 2:
        targets: tuple[str, ...] = (target_name(first),)
    else:  # a second, different target: offset 1..97
        targets = tuple(sorted((target_name(first), target_name((first + 1 + index % 97) % TARGET_COUNT))))
    return Declared(
        name=f"cert-{index:06d}",
        domains=(f"svc-{index}.example.com", f"www.svc-{index}.example.com", f"api.svc-{index}.example.com"),
        issuer="ca-a" if index % 3 else "ca-b",
        key="rsa-2048" if index % 10 == 0 else "ecdsa-p256",
        renew_before="33%" if index % 4 == 0 else "30d",
        targets=targets,
        on_delete="revoke" if index % 5 == 0 else "retire",
    )


def flow(mapping: dict[str, str]) -> str:
    return "{" + ", ".join(f"{key}: {value}" for key, value in mapping.items()) + "}"


def write_desired(directory: Path, count: int) -> int:
    """The YAML files of ``count`` certificates; returns their total size in bytes."""
    header = ["issuers:"]
    header += [f"  {name}:\n    local_ca: {flow(config)}" for name, config in ISSUERS.items()]
    header.append("targets:")
    header += [f"  {target_name(j)}:\n    files: {flow(target_config(j))}" for j in range(TARGET_COUNT)]
    header += ["policy:", '  allowed_domains: ["*.example.com"]']
    (directory / "plugins.yaml").write_text("\n".join(header) + "\n")
    size = (directory / "plugins.yaml").stat().st_size
    per_file = -(-count // CERT_FILES)
    for part in range(CERT_FILES):
        lines = ["certificates:"]
        for index in range(part * per_file, min(count, (part + 1) * per_file)):
            cert = declared(index)
            lines += [
                f"  - name: {cert.name}",
                f"    domains: [{', '.join(cert.domains)}]",
                f"    issuer: {cert.issuer}",
                f"    key: {cert.key}",
                f'    renew_before: "{cert.renew_before}"',
                f"    targets: [{', '.join(cert.targets)}]",
                f"    on_delete: {cert.on_delete}",
            ]
        path = directory / f"certificates-{part:02d}.yaml"
        path.write_text("\n".join(lines) + "\n")
        size += path.stat().st_size
    return size


def expected_fingerprints() -> tuple[dict[str, str], dict[str, str]]:
    issuers = {
        name: plugin_fingerprint("local_ca", LocalCaConfig.model_validate(config)) for name, config in ISSUERS.items()
    }
    targets = {
        target_name(j): plugin_fingerprint("files", FilesTargetConfig.model_validate(target_config(j)))
        for j in range(TARGET_COUNT)
    }
    return issuers, targets


# ---------------------------------------------------------------- the matching actual state

CERT_COLUMNS = (
    "id, domain, san_domains, serial_number, not_before, not_after, status, fingerprint, key_ref,"
    " name, issuer, key_type, cert_pem, chain_pem, on_delete, issuer_fingerprint, created_at"
)
DIST_COLUMNS = "cert_name, target, cert_id, fingerprint, pushed_at, verified_at, last_error, target_fingerprint"
CHUNK = 5_000


def _ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S+00")


def fill_state(url: str, count: int, pem_bytes: int) -> float:
    """COPY the actual state matching ``declared(0..count-1)``; returns the seconds it took."""
    issuer_fps, target_fps = expected_fingerprints()
    rng = random.Random(count)
    # Incompressible per value (pglz finds no repeats in a slice of random base64).
    blob = base64.b64encode(rng.randbytes(max(pem_bytes, 64) * 2)).decode()
    start = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.cursor() as cursor:
            with cursor.copy(f"COPY Certificate ({CERT_COLUMNS}) FROM STDIN") as copy:
                lines: list[str] = []
                for index in range(count):
                    cert = declared(index)
                    cert_id = f"00000000-0000-4000-8000-{index:012x}"
                    fingerprint = hashlib.sha256(cert.name.encode()).hexdigest()
                    not_before = NOW - timedelta(days=1 + index % 19, minutes=index % 1440)
                    not_after = not_before + timedelta(days=90)
                    offset = index % max(pem_bytes, 64)
                    key_ref = json.dumps(
                        {
                            "v": 1,
                            "kms": "local",
                            "key_id": "bench",
                            "wrapped_dek": blob[offset : offset + 80],
                            "nonce": blob[offset + 80 : offset + 96],
                            "ciphertext": blob[offset + 96 : offset + 96 + 240],
                        }
                    )
                    pem = (
                        "-----BEGIN CERTIFICATE-----\\n"
                        + blob[offset : offset + pem_bytes]
                        + "\\n-----END CERTIFICATE-----\\n"
                    )
                    sans = json.dumps(list(cert.domains[1:]))
                    lines.append(
                        "\t".join(
                            (
                                cert_id,
                                cert.domains[0],
                                sans,
                                f"{index:032x}",
                                _ts(not_before),
                                _ts(not_after),
                                "active",
                                fingerprint,
                                key_ref,
                                cert.name,
                                cert.issuer,
                                cert.key,
                                pem,
                                pem,
                                cert.on_delete,
                                issuer_fps[cert.issuer],
                                _ts(not_before),
                            )
                        )
                    )
                    if len(lines) == CHUNK:
                        copy.write("\n".join(lines) + "\n")
                        lines.clear()
                if lines:
                    copy.write("\n".join(lines) + "\n")
            with cursor.copy(f"COPY Distribution ({DIST_COLUMNS}) FROM STDIN") as copy:
                lines = []
                for index in range(count):
                    cert = declared(index)
                    cert_id = f"00000000-0000-4000-8000-{index:012x}"
                    fingerprint = hashlib.sha256(cert.name.encode()).hexdigest()
                    pushed = _ts(NOW - timedelta(days=1))
                    lines.extend(
                        "\t".join((cert.name, target, cert_id, fingerprint, pushed, pushed, "\\N", target_fps[target]))
                        for target in cert.targets
                    )
                    if len(lines) >= CHUNK:
                        copy.write("\n".join(lines) + "\n")
                        lines.clear()
                if lines:
                    copy.write("\n".join(lines) + "\n")
        conn.execute("VACUUM ANALYZE Certificate")
        conn.execute("VACUUM ANALYZE Distribution")
    return time.perf_counter() - start


# ---------------------------------------------------------------- counting round trips


class RoundTrips:
    """Counts psycopg calls that each cost one client/server round trip (outermost call only)."""

    def __init__(self) -> None:
        self.active = False
        self.statements: list[str] = []
        self._depth = 0

    def _wrap(self, owner: type, method: str, label: Callable[[tuple[Any, ...]], str]) -> None:
        original = getattr(owner, method)

        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if self.active and self._depth == 0:
                self.statements.append(label(args))
            self._depth += 1
            try:
                return original(*args, **kwargs)
            finally:
                self._depth -= 1

        setattr(owner, method, wrapper)

    def install(self) -> None:
        def query(args: tuple[Any, ...]) -> str:
            text = args[1] if len(args) > 1 else "?"
            text = text.as_string() if isinstance(text, sql.Composable) else str(text)
            return " ".join(text.split())[:60]

        for method in ("execute", "executemany", "stream", "copy"):
            self._wrap(psycopg.Cursor, method, query)
        self._wrap(psycopg.ServerCursor, "execute", query)
        for method in ("fetchone", "fetchmany", "fetchall", "scroll"):
            self._wrap(psycopg.ServerCursor, method, lambda _args, m=method: f"server cursor {m}")
        self._wrap(psycopg.Connection, "commit", lambda _args: "COMMIT (commit())")
        self._wrap(psycopg.Connection, "rollback", lambda _args: "ROLLBACK (rollback())")
        self._wrap(psycopg.Transaction, "__enter__", lambda _args: "BEGIN/SAVEPOINT (transaction())")
        self._wrap(psycopg.Transaction, "__exit__", lambda _args: "COMMIT/RELEASE (transaction())")

    @contextlib.contextmanager
    def counting(self) -> Iterator[list[str]]:
        self.statements = []
        self.active = True
        try:
            yield self.statements
        finally:
            self.active = False


ROUND_TRIPS = RoundTrips()


@contextlib.contextmanager
def wire_trace(session: Any, path: Path) -> Iterator[None]:
    """libpq protocol trace of the session's connection (bench only: reaches into the session)."""
    pgconn = session._conn.pgconn
    with path.open("w") as sink:
        pgconn.trace(sink.fileno())
        pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            yield
        finally:
            pgconn.untrace()


def ready_for_query_count(path: Path) -> int:
    with path.open() as trace:
        return sum(1 for line in trace if "\tReadyForQuery" in line and line.startswith("B\t"))


# ---------------------------------------------------------------- one plan


@dataclass
class Run:
    load_desired: float
    connect: float
    load_actual: float
    build_plan: float
    total: float
    statements: list[str] = field(default_factory=list)


def plan_once(directory: Path, store: PostgresStore) -> tuple[Run, DesiredState, ActualState, Plan]:
    start = time.perf_counter()
    desired = load_desired(directory)
    loaded = time.perf_counter()
    with store.session() as session:
        connected = time.perf_counter()
        with ROUND_TRIPS.counting() as statements:
            actual = session.load_actual()
        read = time.perf_counter()
    closed = time.perf_counter()
    the_plan = build_plan(desired, actual, Observations.none(), NOW)
    end = time.perf_counter()
    run = Run(
        load_desired=loaded - start,
        connect=connected - loaded,
        load_actual=read - connected,
        build_plan=end - closed,
        total=end - start,
        statements=list(statements),
    )
    return run, desired, actual, the_plan


def check_empty(the_plan: Plan, desired: DesiredState, actual: ActualState, count: int) -> None:
    assert len(desired.certificates) == count, len(desired.certificates)
    assert len(actual.certificates) == count, len(actual.certificates)
    if the_plan.changes:
        sample = "; ".join(
            f"{change.action.value} {change.name}: {', '.join(reason.message for reason in change.reasons)}"
            for change in the_plan.changes[:5]
        )
        raise AssertionError(f"expected an empty plan, got {len(the_plan.changes)} changes, e.g. {sample}")


# ---------------------------------------------------------------- memory


def tracemalloc_peak(directory: Path, store: PostgresStore) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        _run, _desired, _actual, the_plan = plan_once(directory, store)
        assert not the_plan.changes
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _proc_status_kib(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_growth_in_child(directory: Path, url: str) -> int:
    """Bytes of peak-RSS growth over one plan, in a fresh process."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", url, str(directory)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return int(result["delta_bytes"])


def child(url: str, directory: Path) -> None:
    """One plan; prints the growth of the peak RSS over it.

    ``ru_maxrss`` is useless here: Linux carries it over ``execve`` from the parent (whose
    RSS is large after the previous runs), so it is the per-process high-water mark VmHWM,
    reset first through ``/proc/self/clear_refs``, minus VmRSS before the plan.
    """
    store = PostgresStore(url)
    try:
        Path("/proc/self/clear_refs").write_text("5")
        before = _proc_status_kib("VmRSS")
    except OSError:
        before = None
    if before is None:  # no procfs: fall back on ru_maxrss (may under-report, see above)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _run, _desired, _actual, the_plan = plan_once(directory, store)
    after = _proc_status_kib("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert not the_plan.changes
    print(json.dumps({"delta_bytes": (after - before) * 1024}))  # KiB


# ---------------------------------------------------------------- driver


@dataclass
class Result:
    count: int
    yaml_bytes: int
    fill_seconds: float
    runs: list[Run]
    wire_round_trips: int
    tracemalloc_peak: int
    rss_growth: int

    def median(self, attribute: str) -> float:
        return statistics.median(getattr(run, attribute) for run in self.runs)


def fresh_database(admin_url: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(BENCH_DB)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(BENCH_DB)))
    return psycopg.conninfo.make_conninfo(admin_url, dbname=BENCH_DB)


def drop_database(admin_url: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(BENCH_DB)))


def measure(admin_url: str, count: int, repeat: int, pem_bytes: int, profile: bool) -> Result:
    with tempfile.TemporaryDirectory(prefix="crplan") as temp:
        directory = Path(temp) / "desired"
        directory.mkdir()
        yaml_bytes = write_desired(directory, count)
        url = fresh_database(admin_url)
        store = PostgresStore(url)
        store.upgrade()
        fill_seconds = fill_state(url, count, pem_bytes)
        print(f"  {count:,}: {yaml_bytes / 1e6:.1f} MB of YAML, state filled in {fill_seconds:.1f} s", flush=True)

        # Warm-up (imports, caches), and the checks the timed runs rely on.
        _run, desired, actual, the_plan = plan_once(directory, store)
        issuer_fps, target_fps = expected_fingerprints()
        assert {name: spec.fingerprint for name, spec in desired.issuers.items()} == issuer_fps
        assert {name: spec.fingerprint for name, spec in desired.targets.items()} == target_fps
        check_empty(the_plan, desired, actual, count)
        del desired, actual, the_plan

        runs = []
        for _ in range(repeat):
            run, _desired, _actual, the_plan = plan_once(directory, store)
            assert not the_plan.changes
            runs.append(run)
            del _desired, _actual, the_plan

        trace_path = Path(temp) / "libpq.trace"
        with store.session() as session, wire_trace(session, trace_path):
            session.load_actual()
        wire = ready_for_query_count(trace_path)
        trace_path.unlink()

        peak = tracemalloc_peak(directory, store)
        rss = rss_growth_in_child(directory, url)

        if profile:
            profiler = cProfile.Profile()
            profiler.enable()
            plan_once(directory, store)
            profiler.disable()
            print(f"\n### cProfile, {count:,} certificates (top 25 by internal time)\n```")
            pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(25)
            print("```\n", flush=True)
        drop_database(admin_url)
    return Result(count, yaml_bytes, fill_seconds, runs, wire, peak, rss)


def report(results: list[Result], repeat: int) -> None:
    ms = 1000.0
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"\n## plan, nothing to change (median of {repeat} runs; now = {NOW.isoformat()}; load average {load})\n")
    print(
        "| certificates | YAML | load_desired ms | connect ms | load_actual ms | build_plan ms | **total ms** "
        "| round trips (load_actual) | wire check | tracemalloc peak | peak RSS growth |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for result in results:
        trips = {len(run.statements) for run in result.runs}
        print(
            f"| {result.count:,} | {result.yaml_bytes / 1e6:.1f} MB "
            f"| {result.median('load_desired') * ms:.0f} | {result.median('connect') * ms:.1f} "
            f"| {result.median('load_actual') * ms:.0f} | {result.median('build_plan') * ms:.0f} "
            f"| **{result.median('total') * ms:.0f}** | {'/'.join(str(t) for t in sorted(trips))} "
            f"| {result.wire_round_trips} | {result.tracemalloc_peak / 2**20:.1f} MiB "
            f"| {result.rss_growth / 2**20:.1f} MiB |"
        )
    print(
        "\ntracemalloc peak: Python-heap allocations over one whole plan (libpq result buffers excluded). "
        "peak RSS growth: VmHWM after minus VmRSS before one plan, in a fresh child process (everything included)."
    )
    print("\nStatements of load_actual:")
    for statement in results[-1].runs[-1].statements:
        print(f"- `{statement}`")
    trips = {len(run.statements) for result in results for run in result.runs}
    wires = {result.wire_round_trips for result in results}
    independent = len(trips) == 1 and wires == trips
    print(f"\nRound trips independent of N: {'yes' if independent else 'NO'} (counted {trips}, wire {wires})")
    by_count = {result.count: result for result in results}
    for small, large in ((1_000, 10_000), (10_000, 100_000)):
        if small in by_count and large in by_count:
            ratios = ", ".join(
                f"{stage} x{by_count[large].median(stage) / by_count[small].median(stage):.1f}"
                for stage in ("load_desired", "load_actual", "build_plan", "total")
            )
            print(f"Growth {small:,} -> {large:,} (x{large // small} certificates): {ratios}")


def admin_url_and_server(args: argparse.Namespace, stack: contextlib.ExitStack, temp: Path) -> str:
    url = args.url or os.environ.get(ENV_TEST_DATABASE_URL)
    if url:
        return str(url)
    server = EmbeddedPostgres(temp / "pg")
    url = server.ensure_running()
    stack.callback(server.stop)
    return url


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], Path(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="comma-separated certificate counts")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per size (the median is shown)")
    parser.add_argument("--pem-bytes", type=int, default=1000, help="size of each stored PEM (cert_pem, chain_pem)")
    parser.add_argument(
        "--url", help=f"admin URL (may CREATE DATABASE); default: ${ENV_TEST_DATABASE_URL} or a scratch server"
    )
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one extra run per size")
    args = parser.parse_args()
    sizes = [int(size.replace("_", "")) for size in args.sizes.split(",") if size.strip()]
    ROUND_TRIPS.install()
    results = []
    with tempfile.TemporaryDirectory(prefix="crplan-pg") as temp, contextlib.ExitStack() as stack:
        admin_url = admin_url_and_server(args, stack, Path(temp))
        print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; setting up:", flush=True)
        results.extend(measure(admin_url, count, args.repeat, args.pem_bytes, args.profile) for count in sizes)
    report(results, args.repeat)


if __name__ == "__main__":
    main()
