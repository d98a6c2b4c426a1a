"""Benchmark: certreconcile beside its peers, every tool issuing against the same Pebble in one run.

    python bench/peers.py [--certificates 100] [--runs 3] [--peer-runs 1] [--serial-certificates 20]
        [--peer-certificates N] [--only certreconcile,acme,certbot,lego]

Pebble (Debian ``pebble``, always valid, no sleeps, started by ``bench/issuance.py``'s ``pebble``)
serves every tool, a fresh one for every measurement (started before the clock: no tool pays for
the orders another left in Pebble's memory, which it searches on every new order). Each tool issues N
certificates of 3 names with EC P-256 keys, the issue's reference setup, and each result is
checked: N certificates with the expected names and key type, parsed from what the tool stored
(or, for the bare library, returned). What is timed:

* certreconcile, apply phase: ``bench/issuance.py``'s ``run_once`` in this process, the pipeline
  of ``certreconcile apply --concurrency 8`` from the first order to the last certificate stored
  (the account's registration inside; keys sealed by the local KMS, journal and audit written).
* certreconcile, ``apply`` command: ``python -m certreconcile apply --auto-approve --concurrency 8``
  as a process: interpreter start, imports, loading, planning, the apply, exit.
* the ``acme`` library (certbot's): a minimal script in this process, the floor of a Python ACME
  client: one account (registered before the clock starts), 8 threads each with its own
  connection, short polls, nothing stored.
* certbot (PyPI, in its own venv, ``.bench/peers-venv`` by default, made once and reused):
  ``certbot certonly --manual`` with a no-op auth hook, one process per certificate, P processes
  at a time, each slot with its own config, work and log directories.
* lego (Debian): ``lego run --http``, one process per certificate, P at a time, each slot with its
  own ``--path`` and HTTP port.

Each certbot and lego slot first issues one untimed certificate (it registers the slot's account
and warms the caches), so their timed span holds issuance only. The Python commands run with their
bytecode cached (after an untimed warm-up). CPU per certificate: the client's (this process's for
the in-process rows, the finished children's for the commands), Pebble's, and PostgreSQL's
(postmaster and backends of the embedded server this script starts) for the ``apply`` command.

The runs are interleaved (run 1 of every row, then run 2...). A sample that fails is tried once
more on a fresh Pebble: Pebble 2.4 can deadlock under concurrent new orders (seen with lego at 32
processes). A peer that cannot be installed, or fails twice, is reported in its row, and the script
exits 1.
Without ``--url`` (or ``CERTRECONCILE_TEST_DATABASE_URL``) a throw-away embedded PostgreSQL is started.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from _peer_clients import (
    Bench,
    Sample,
    acme_floor,
    certbot,
    certbot_install,
    check_certificates,
    children_cpu,
    lego,
    run_command,
    timed,
)
from issuance import ENV_TEST_DATABASE_URL, admin_url, fresh_database, pebble, run_once, write_desired

REPO = Path(__file__).resolve().parents[1]

TOOLS = ("certreconcile", "acme", "certbot", "lego")


@dataclass
class Row:
    tool: str
    parallelism: str
    count: int
    runs: int
    measure: Callable[[], Sample] | None
    warm: Callable[[], None] | None = None
    error: str | None = None
    samples: list[Sample] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)  # the failures tried again on a fresh Pebble

    def rate(self) -> float | None:
        return statistics.median(self.count / s.seconds for s in self.samples) if self.samples else None


def _stat(pid: int | str) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def postgres_cpu(url: str) -> Callable[[], float] | None:
    """A reader of a local server's CPU seconds so far: postmaster, its reaped and its live children."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
    try:
        postmaster = _stat(row[0] if row else 0)[1]
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK")

    def read() -> float:
        total = sum(int(value) for value in _stat(postmaster)[11:15])  # utime stime cutime cstime
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = _stat(entry.name)
                except OSError:
                    continue
                if fields[1] == postmaster:
                    total += int(fields[11]) + int(fields[12])
        return total / tick

    return read


# certreconcile


def apply_phase(bench: Bench, count: int) -> Sample:
    acme = (bench.directory, bench.ca, bench.http01, bench.pebble_pid)
    figures = run_once(bench.admin, bench.scratch, acme, count, bench.args.concurrency, profile=False)
    return Sample(figures["seconds"], figures["ours_ms"] * count / 1000, figures["pebble_ms"] * count / 1000)


def apply_command(bench: Bench, count: int, database: str = "certreconcile_bench_peers_cli") -> Sample:
    directory = bench.scratch / f"cli-{count}"
    write_desired(directory, count, bench.directory, bench.ca, bench.http01)
    url = fresh_database(bench.admin, database)
    env = {
        **bench.python_env,
        "CERTRECONCILE_DATABASE_URL": url,
        "NO_COLOR": "1",
        "CERTRECONCILE_LOCAL_KMS_KEY_FILE": str(bench.scratch / "kms.key"),
    }
    argv = [
        sys.executable,
        "-m",
        "certreconcile",
        "apply",
        "--dir",
        str(directory),
        "--auto-approve",
        "--concurrency",
        str(bench.args.concurrency),
    ]
    sample = timed(bench, children_cpu, lambda: run_command(argv, env), database=True)
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT cert_pem FROM Certificate WHERE retired_at IS NULL").fetchall()
    check_certificates("certreconcile apply", (row[0].encode() for row in rows), count)
    return sample


# the run


def debian_version(package: str) -> str:
    done = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() if done.returncode == 0 else "?"


def peer_rows(bench: Bench, only: set[str], versions: dict[str, str]) -> list[Row]:
    args, count = bench.args, bench.args.certificates
    rows: list[Row] = []
    if "acme" in only:
        versions["acme"] = importlib.metadata.version("acme")
        rows.append(
            Row(
                "acme library",
                f"{args.acme_threads} threads",
                count,
                args.runs,
                lambda: acme_floor(bench, count, args.acme_threads),
            )
        )
    if "certbot" in only:
        binary, version = certbot_install(Path(args.certbot_venv), args.certbot_spec)
        versions["certbot"] = version if binary else "not installed"
        for processes in args.certbot_processes:
            size = peer_size(args, processes)
            measure = (lambda p=processes, n=size, b=binary: certbot(bench, b, n, p)) if binary else None
            rows.append(
                Row(
                    "certbot",
                    plural(processes, "process"),
                    size,
                    args.peer_runs,
                    measure,
                    error=None if binary else version,
                )
            )
    if "lego" in only:
        binary = shutil.which("lego")
        versions["lego"] = debian_version("lego") if binary else "not installed"
        why = "lego is not installed: apt-get install lego (`make deps` installs it)"
        for processes in args.lego_processes:
            size = peer_size(args, processes)
            measure = (lambda p=processes, n=size, b=binary: lego(bench, b, n, p)) if binary else None
            row = Row(
                "lego", plural(processes, "process"), size, args.peer_runs, measure, error=None if binary else why
            )
            rows.append(row)
    return rows


def peer_size(args: argparse.Namespace, processes: int) -> int:
    """N for a certbot or lego row: ``--serial-certificates`` with one process, else ``--peer-certificates``
    but at least 3 per process (each slot's share of the span), never more than ``--certificates``."""
    if processes == 1:
        return min(args.certificates, args.serial_certificates)
    wanted = args.certificates if args.peer_certificates is None else args.peer_certificates
    return min(args.certificates, max(wanted, 3 * processes))


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}es"


def warm_command(bench: Bench) -> None:
    """An untimed apply of 2 certificates: the command's bytecode compiled and cached."""
    apply_command(bench, 2, "certreconcile_bench_peers_warm")


def our_version() -> str:
    """The installed version and the commit measured: an editable install's version is the one of the
    commit it was installed at (setuptools-scm), not of the code that runs."""
    installed = importlib.metadata.version("certreconcile")
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True, timeout=10).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return installed  # not a git checkout (an sdist): the installed version is all there is
    return f"{installed} (code at {commit}{' with local changes' if dirty else ''})"


def all_rows(bench: Bench, only: set[str], versions: dict[str, str]) -> list[Row]:
    args, count = bench.args, bench.args.certificates
    rows: list[Row] = []
    if "certreconcile" in only:
        versions["certreconcile"] = our_version()
        bench.admin = admin_url(args, bench.scratch)
        if not (args.url or os.environ.get(ENV_TEST_DATABASE_URL)):
            bench.database_cpu = postgres_cpu(bench.admin)  # our own server: its CPU is ours
        concurrency = f"concurrency {args.concurrency}"
        rows.append(Row("certreconcile, apply phase", concurrency, count, args.runs, lambda: apply_phase(bench, count)))
        rows.append(
            Row(
                "certreconcile, `apply` command",
                concurrency,
                count,
                args.runs,
                lambda: apply_command(bench, count),
                warm=lambda: warm_command(bench),
            )
        )
    return rows + peer_rows(bench, only, versions)


def measure_once(bench: Bench, row: Row, first: bool) -> Sample:
    """One sample of ``row`` on a Pebble of its own, started before the clock and stopped after."""
    bench.pebbles += 1
    with pebble(bench.scratch / f"pebble-{bench.pebbles}") as (directory, ca, http01, pid):
        bench.directory, bench.ca, bench.http01, bench.pebble_pid = directory, ca, http01, pid
        if first and row.warm:
            row.warm()
        return row.measure()


def measure(bench: Bench, rows: list[Row]) -> None:
    """The runs interleaved (run 1 of every row, then run 2...), so a change of load falls on every tool.

    A failed sample is tried once more on a fresh Pebble (Pebble 2.4 can deadlock under concurrent new
    orders: its store's lock and an authorization's are taken in both orders); a second failure ends the row.
    """
    for run in range(max((row.runs for row in rows), default=0)):
        for row in rows:
            if row.error or row.measure is None or run >= row.runs:
                continue
            for attempt in (1, 2):
                try:
                    sample = measure_once(bench, row, first=not row.samples)
                    break
                except Exception as error:  # noqa: BLE001 - a failing tool is reported in its row, the others go on
                    reason = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
                    print(f"{row.tool} {row.parallelism} run {run + 1} failed: {reason}", file=sys.stderr)
                    if attempt == 1:
                        row.retried.append(f"run {run + 1}: {reason[:120]}")
                    else:
                        row.error = f"failed twice: {reason}"
            else:
                continue
            row.samples.append(sample)
            print(f"{row.tool} {row.parallelism} run {run + 1}: {row.count / sample.seconds:.1f}/s", file=sys.stderr)


def ms(samples: list[Sample], count: int, attribute: str) -> str:
    values = [getattr(sample, attribute) for sample in samples]
    if not values or None in values:
        return "–"
    return f"{1000 * statistics.median(values) / count:.1f}"


def ratio(ours: float | None, theirs: float | None) -> str:
    return f"{ours / theirs:.2f}×" if ours and theirs else "–"


def report(rows: list[Row], versions: dict[str, str], load: tuple[float, float], elapsed: float) -> None:
    phase = next((row.rate() for row in rows if row.tool == "certreconcile, apply phase"), None)
    command = next((row.rate() for row in rows if row.tool == "certreconcile, `apply` command"), None)
    print("Issuance against Pebble (always valid, no sleeps; a fresh one for every measurement), certificates")
    print("of 3 names, EC P-256 keys. Certificates/s: the median of the runs (N certificates each) and their range;")
    print("CPU ms per certificate (medians): the client's, Pebble's, PostgreSQL's (certreconcile's command only).")
    print(f"Load average {load[0]:.1f} at the start, {load[1]:.1f} at the end, on {os.cpu_count()} cores.")
    print()
    print(
        "| tool | parallelism | N × runs | certificates/s | range | client CPU | Pebble CPU | PostgreSQL CPU "
        "| apply phase ÷ this | `apply` command ÷ this |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        if not row.samples:
            why = " ".join(str(row.error).split()).replace("|", "/")
            print(f"| {row.tool} | {row.parallelism} | {row.count} | not measured: {why} | | | | | | |")
            continue
        rates = [row.count / sample.seconds for sample in row.samples]
        cpu = " | ".join(ms(row.samples, row.count, name) for name in ("client_cpu", "pebble_cpu", "database_cpu"))
        failed = f" (then {row.error})" if row.error else ""
        print(
            f"| {row.tool} | {row.parallelism} | {row.count} × {len(row.samples)} | {row.rate():.1f}{failed} "
            f"| {min(rates):.1f}–{max(rates):.1f} | {cpu} | {ratio(phase, row.rate())} "
            f"| {ratio(command, row.rate())} |"
        )
    print()
    for row in rows:
        for failure in row.retried:
            print(f"* {row.tool}, {row.parallelism}: {failure.replace('|', '/')} (tried again on a fresh Pebble)")
    if any(row.retried for row in rows):
        print()
    print(
        "Versions: "
        + ", ".join(f"{tool} {version}" for tool, version in {**versions, "pebble": debian_version("pebble")}.items())
        + f". The whole script took {elapsed:.0f} s."
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    numbers = lambda text: [int(value) for value in text.split(",")]  # noqa: E731
    parser.add_argument("--certificates", type=int, default=100, help="N, certificates of 3 names (default 100)")
    parser.add_argument("--runs", type=int, default=3, help="runs of certreconcile and the acme library (default 3)")
    parser.add_argument("--peer-runs", type=int, default=1, help="runs of certbot and lego (default 1)")
    parser.add_argument("--only", default=",".join(TOOLS), help=f"some of {','.join(TOOLS)}")
    parser.add_argument("--concurrency", type=int, default=8, help="certreconcile's --concurrency (default 8)")
    parser.add_argument("--acme-threads", type=int, default=8)
    parser.add_argument("--certbot-processes", type=numbers, default=[1, 4])
    parser.add_argument("--lego-processes", type=numbers, default=[1, 8, 32])
    parser.add_argument(
        "--serial-certificates",
        type=int,
        default=20,
        help="certificates for certbot and lego with 1 process (default 20: they wait seconds per certificate)",
    )
    parser.add_argument(
        "--peer-certificates",
        type=int,
        default=None,
        help="certificates for certbot and lego with several processes (default: --certificates; at least 3 per"
        " process)",
    )
    parser.add_argument("--certbot-venv", default=str(REPO / ".bench" / "peers-venv"))
    parser.add_argument("--certbot-spec", default="certbot", help="what pip installs (default: certbot)")
    parser.add_argument("--url", default=None, help="admin URL of a PostgreSQL server (may CREATE DATABASE)")
    args = parser.parse_args()
    args.only = {tool.strip() for tool in args.only.split(",") if tool.strip()}
    if not args.only or not args.only <= set(TOOLS):
        parser.error(f"--only takes some of {','.join(TOOLS)}")
    return args


def main() -> None:
    args = parse_args()
    started, load = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="certreconcile-bench-peers-") as temporary:
        scratch = Path(temporary)
        python_env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPYCACHEPREFIX": str(scratch / "pycache")}
        python_env.pop("PYTHONDONTWRITEBYTECODE", None)  # every Python command runs with its bytecode cached
        bench = Bench(scratch, args, python_env)
        versions: dict[str, str] = {}
        rows = all_rows(bench, args.only, versions)
        measure(bench, rows)
    report(rows, versions, (load, os.getloadavg()[0]), time.perf_counter() - started)
    failed = [row for row in rows if row.error]
    if failed:
        sys.exit("not measured or failed: " + "; ".join(f"{row.tool} {row.parallelism}: {row.error}" for row in failed))


if __name__ == "__main__":
    main()
