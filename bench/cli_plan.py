"""Benchmark: `certreconcile plan` as a whole process (interpreter start and imports included).

    python bench/cli_plan.py [--sizes 10000,100000] [--repeat 5] [--url ADMIN_URL] [--keep DIR]

``bench/plan_scale.py`` times the engine inside one warm process; this times what a user or a
CI job pays: ``python -m certreconcile plan --dir D`` started afresh, against the same state
(``plan_scale.write_desired`` and ``plan_scale.fill_state``: N certificates, nothing to do, an
empty plan expected and checked). For each size it prints the median wall time of ``--repeat``
runs and the largest peak RSS of the process, and once per size the database round trips of the
whole command (every psycopg call that costs one, counted in a process of its own, as in
plan_scale). Before the sizes: the wall time of ``certreconcile --help`` and of importing
``certreconcile.cli.main``, the fixed cost every command pays.

Each process is started by a small launcher (``python -S``) that times it and reads its CPU time
(user + system) and peak RSS from ``wait4``: Linux carries ``ru_maxrss`` over ``execve`` from the
parent, so a child of this (large) benchmark process would report this process's size. On a
shared machine the CPU time is the steadier figure; the wall time is what a user waits.

The commands run with their bytecode cached (in a temporary ``PYTHONPYCACHEPREFIX``, after a
warm-up run), as an installed package runs: with ``PYTHONDONTWRITEBYTECODE`` set (as some CI
and sandbox environments do) and an editable install, every run would compile certreconcile's
modules from source, about 50 ms more per command. ``--from-source`` measures that instead.

``--keep DIR`` writes the desired-state directories into DIR (``DIR/N``) and leaves their
databases in place, printing the environment to rerun a plan by hand (for profiling with
``python -X importtime`` or cProfile); with a scratch server (no ``--url``) it keeps running
in ``DIR/pg`` until ``python bench/cli_plan.py --stop DIR``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from certreconcile.actual.embedded import EmbeddedPostgres
from certreconcile.actual.repository import PostgresStore
from plan_scale import ENV_TEST_DATABASE_URL, NOW, ROUND_TRIPS, fill_state, write_desired

BENCH_DB_PREFIX = "certreconcile_cli_plan_"

# Runs in `python -S`: starts argv (its stdout to /dev/null), waits, prints the figures as JSON.
LAUNCHER = """
import json, os, sys, time
start = time.perf_counter()
quiet = [(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)]
pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ, file_actions=quiet)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "cpu": usage.ru_utime + usage.ru_stime, "maxrss_kib": usage.ru_maxrss,
                  "rc": os.waitstatus_to_exitcode(status)}))
"""


@dataclass
class Timing:
    seconds: float
    cpu: float
    maxrss_kib: int


def launch(argv: list[str], env: dict[str, str], expect_rc: int = 0) -> Timing:
    """Run ``argv`` (its output discarded) under the launcher."""
    done = subprocess.run(
        [sys.executable, "-S", "-c", LAUNCHER, *argv],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["rc"] != expect_rc:
        rerun = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        raise AssertionError(f"{argv} exited {result['rc']}: {rerun.stdout[-2000:]}{rerun.stderr[-2000:]}")
    return Timing(result["seconds"], result["cpu"], result["maxrss_kib"])


def base_env(bytecode_dir: Path | None) -> dict[str, str]:
    """The environment of every measured command: bytecode cached under ``bytecode_dir`` (None: as is)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if bytecode_dir is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(bytecode_dir)
    return env


def cli_env(url: str, bytecode_dir: Path | None) -> dict[str, str]:
    return {
        **base_env(bytecode_dir),
        "CERTRECONCILE_DATABASE_URL": url,
        "CERTRECONCILE_TEST_NOW": NOW.isoformat().replace("+00:00", "Z"),
        "NO_COLOR": "1",
    }


def plan_argv(directory: Path) -> list[str]:
    return [sys.executable, "-m", "certreconcile", "plan", "--dir", str(directory)]


def check_plan_output(directory: Path, env: dict[str, str]) -> None:
    done = subprocess.run(plan_argv(directory), env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0 or "No changes" not in done.stdout:
        raise AssertionError(f"expected an empty plan (exit 0), got {done.returncode}: {done.stdout[-800:]}"
                             f"{done.stderr[-800:]}")  # fmt: skip


def count_round_trips(directory: Path, env: dict[str, str]) -> int:
    """The round trips of one whole `plan` command, in a process of its own."""
    done = subprocess.run(
        [sys.executable, __file__, "--count-trips", str(directory)], env=env, capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    lines = done.stdout.strip().splitlines()
    if not lines or not lines[-1].startswith("{"):
        raise AssertionError(f"round-trip count failed ({done.returncode}): {done.stderr[-2000:]}")
    return int(json.loads(lines[-1])["round_trips"])


def count_trips_child(directory: Path) -> None:
    from certreconcile.cli.main import main as cli_main

    ROUND_TRIPS.install()
    code: object = None
    with ROUND_TRIPS.counting() as statements, contextlib.redirect_stdout(open(os.devnull, "w")):
        try:
            cli_main(["plan", "--dir", str(directory)])
        except SystemExit as exc:
            code = exc.code
    if code != 0:
        raise SystemExit(f"plan exited {code}")
    print(json.dumps({"round_trips": len(statements), "statements": statements}))


@dataclass
class Result:
    count: int
    runs: list[Timing]
    round_trips: int

    @property
    def median_seconds(self) -> float:
        return statistics.median(run.seconds for run in self.runs)

    @property
    def median_cpu(self) -> float:
        return statistics.median(run.cpu for run in self.runs)

    @property
    def peak_mib(self) -> float:
        return max(run.maxrss_kib for run in self.runs) / 1024


def database_url(admin_url: str, count: int) -> str:
    name = f"{BENCH_DB_PREFIX}{count}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return psycopg.conninfo.make_conninfo(admin_url, dbname=name)


def drop_database(admin_url: str, count: int) -> None:
    name = f"{BENCH_DB_PREFIX}{count}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def measure(admin_url: str, count: int, repeat: int, root: Path, keep: bool, bytecode_dir: Path | None) -> Result:
    directory = root / str(count)
    directory.mkdir(parents=True, exist_ok=True)
    write_desired(directory, count)
    url = database_url(admin_url, count)
    PostgresStore(url).upgrade()
    fill = fill_state(url, count, 1000)
    env = cli_env(url, bytecode_dir)
    print(f"  {count:,}: state filled in {fill:.1f} s", flush=True)
    check_plan_output(directory, env)  # also the warm-up (page cache, bytecode)
    runs = [launch(plan_argv(directory), env) for _ in range(repeat)]
    trips = count_round_trips(directory, env)
    if keep:
        print(f"    kept: CERTRECONCILE_DATABASE_URL='{url}' CERTRECONCILE_TEST_NOW={env['CERTRECONCILE_TEST_NOW']} "
              f"python -m certreconcile plan --dir {directory}")  # fmt: skip
    else:
        drop_database(admin_url, count)
    return Result(count, runs, trips)


def fixed_costs(repeat: int, bytecode_dir: Path | None) -> dict[str, Timing]:
    env = base_env(bytecode_dir)
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "import certreconcile.cli.main": [sys.executable, "-c", "import certreconcile.cli.main"],
        "certreconcile --help": [sys.executable, "-m", "certreconcile", "--help"],
    }
    launch(commands["certreconcile --help"], env)  # warm-up
    return {
        label: min((launch(argv, env) for _ in range(repeat)), key=lambda timing: timing.seconds)
        for label, argv in commands.items()
    }


def report(fixed: dict[str, Timing], results: list[Result], repeat: int, bytecode: bool) -> None:
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    compiled = "bytecode cached" if bytecode else "as the environment says (PYTHONDONTWRITEBYTECODE...)"
    print(f"\n## certreconcile as a process ({compiled}; load average {load})\n")
    print("| command | best wall ms | its CPU ms | peak RSS |\n|---|---:|---:|---:|")
    for label, timing in fixed.items():
        wall, cpu, rss = timing.seconds * 1000, timing.cpu * 1000, timing.maxrss_kib / 1024
        print(f"| `{label}` | {wall:.0f} | {cpu:.0f} | {rss:.0f} MiB |")
    print(f"\n### `certreconcile plan`, nothing to change (median of {repeat} runs)\n")
    print("| certificates | **wall ms** (median) | min–max ms | CPU ms (median) | peak RSS | round trips (command) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for result in results:
        seconds = [run.seconds for run in result.runs]
        print(
            f"| {result.count:,} | **{result.median_seconds * 1000:.0f}** | {min(seconds) * 1000:.0f}–"
            f"{max(seconds) * 1000:.0f} | {result.median_cpu * 1000:.0f} | {result.peak_mib:.0f} MiB "
            f"| {result.round_trips} |"
        )
    trips = {result.round_trips for result in results}
    print(f"\nRound trips independent of N: {'yes' if len(trips) == 1 else 'NO'} ({sorted(trips)})")


def admin_url(args: argparse.Namespace, stack: contextlib.ExitStack, root: Path) -> str:
    url = args.url or os.environ.get(ENV_TEST_DATABASE_URL)
    if url:
        return str(url)
    server = EmbeddedPostgres(root / "pg")
    started = server.ensure_running()
    if not args.keep:
        stack.callback(server.stop)
    return started


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--count-trips":
        count_trips_child(Path(sys.argv[2]))
        return
    if len(sys.argv) == 3 and sys.argv[1] == "--stop":
        EmbeddedPostgres(Path(sys.argv[2]) / "pg").stop()
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated certificate counts")
    parser.add_argument("--repeat", type=int, default=5, help="runs per size (the median is shown)")
    parser.add_argument(
        "--url", help=f"admin URL (may CREATE DATABASE); default: ${ENV_TEST_DATABASE_URL} or a scratch server"
    )
    parser.add_argument("--keep", type=Path, help="keep the directories and databases here (see above)")
    parser.add_argument("--from-source", action="store_true", help="leave the bytecode settings as they are")
    args = parser.parse_args()
    sizes = [int(size.replace("_", "")) for size in args.sizes.split(",") if size.strip()]
    with tempfile.TemporaryDirectory(prefix="crcli") as temp, contextlib.ExitStack() as stack:
        root = args.keep.absolute() if args.keep else Path(temp)
        url = admin_url(args, stack, root)
        bytecode_dir = None if args.from_source else Path(temp) / "pycache"
        print(f"Python {sys.version.split()[0]} from {sys.base_prefix}, {os.cpu_count()} CPUs; setting up:", flush=True)
        fixed = fixed_costs(args.repeat, bytecode_dir)
        results = [measure(url, count, args.repeat, root, args.keep is not None, bytecode_dir) for count in sizes]
        report(fixed, results, args.repeat, bytecode_dir is not None)


if __name__ == "__main__":
    main()
