"""Benchmark: rotate ONE certificate on 1,000 webhook targets, verified, by fan-out width.

    python bench/fanout.py [--targets 1000] [--concurrency 1,8,32,128] [--latency-ms 0,20] [--repeat 1]
                           [--profile] [--url ADMIN_URL]

The receivers are one HTTPS server on 127.0.0.1 in a process of its own (``--receiver``, started
by the bench): every target is a distinct ``webhook`` URL on it (``/hook/0000`` ... ``/hook/0999``),
with a signing secret (``secret_env``) and the server's throw-away CA as ``ca_bundle``. The
receiver answers each POST with the fingerprint it received (what confirms a webhook delivery:
a webhook cannot be asked later what it serves) and remembers, per URL, the last fingerprint;
``GET /state`` returns that map.

The desired state declares the 1,000 targets and one certificate (local CA, ECDSA P-256) deployed
to all of them. Measured, as the CLI does it (a fresh applier environment per run):

* first apply: the plan of the empty database, applied at the highest concurrency (issue, then
  deploy to every target);
* one forced rotation per fan-out width N (``engine.rotation_plan``, as ``certreconcile rotate``,
  applied by ``engine.apply`` with ``target_concurrency=N``, as ``apply --target-concurrency N``):
  a new key, issue, POST to every target, record every target verified, activate. Wall time from
  the start to the rotation completed. Then again with the receiver answering each POST after
  ``--latency-ms`` (20 ms: a receiver across a network, or one that reloads before it answers),
  at every width but 1 (1,000 x 20 ms serially is 20 s of waiting).

Each run is checked: no failure, every distribution recorded verified with the new fingerprint,
and the receiver's last fingerprint of every URL is the new one. Reported per run: wall time,
targets/s, the CPU time of this (the applier) process and of the receiver process, per target,
and the statements this process sent to PostgreSQL (one round trip each). The machine's load
average is printed: other work on the machine slows every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from certreconcile import engine
from certreconcile.actual.model import Observations
from certreconcile.actual.repository import PostgresStore
from certreconcile.clock import SystemClock
from certreconcile.desired import load_desired
from certreconcile.plan import build_plan
from certreconcile.wiring import Settings, build_environment

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fleet import own_cpu, tree_cpu
from issuance import admin_url, fresh_database
from plan_scale import ROUND_TRIPS

NAME = "shop"
DOMAINS = ("shop.bench.test", "www.shop.bench.test")
CHANGE_CONCURRENCY = 4  # apply's default --concurrency (one change here: one worker)
SECRET_ENV = "FANOUT_WEBHOOK_SECRET"  # noqa: S105 - the name of a variable, not a secret


# ---------------------------------------------------------------- the receiver (its own process)


def serve(directory: Path) -> None:
    """The receiver: one HTTPS server answering every ``/hook/...`` URL; prints its port, runs until SIGTERM."""
    from acme_servers import make_tls_bundle

    _ca, cert, key = make_tls_bundle(directory)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    served: dict[str, str] = {}
    lock = threading.Lock()
    delay = [0.0]  # seconds each POST waits before its answer (a remote receiver, a reload): GET /delay/<ms>

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            fingerprint = str(json.loads(body)["fingerprint"])
            with lock:
                served[self.path] = fingerprint
            if delay[0]:
                time.sleep(delay[0])
            self._answer(json.dumps({"fingerprint": fingerprint}).encode())

        def do_GET(self) -> None:
            if self.path.startswith("/delay/"):
                delay[0] = int(self.path.removeprefix("/delay/")) / 1000
            with lock:
                self._answer(json.dumps(served).encode())

        def _answer(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 1024  # 128 connections at once: the default backlog (5) drops SYNs

    httpd = Server(("127.0.0.1", 0), Handler)
    # The handshake happens in each connection's own thread (on its first read), not in the accept loop.
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
    signal.signal(signal.SIGTERM, lambda signum, frame: threading.Thread(target=httpd.shutdown).start())
    print(httpd.server_address[1], flush=True)
    httpd.serve_forever()
    httpd.server_close()


@dataclass
class Receiver:
    process: subprocess.Popen[str]
    port: int
    ca: Path

    def state(self, path: str = "/state") -> dict[str, str]:
        context = ssl.create_default_context(cafile=str(self.ca))
        with urllib.request.urlopen(f"https://127.0.0.1:{self.port}{path}", context=context, timeout=30) as answer:
            document: dict[str, str] = json.loads(answer.read())
        return document

    def answer_after(self, milliseconds: int) -> None:
        self.state(f"/delay/{milliseconds}")

    def cpu(self) -> float:
        return tree_cpu(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_receiver(directory: Path) -> Receiver:
    directory.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen([sys.executable, __file__, "--receiver", str(directory)], stdout=subprocess.PIPE,
                               text=True)  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.strip().isdigit():
        process.kill()
        raise SystemExit(f"the webhook receiver did not start (exit {process.wait()})")
    return Receiver(process, int(line), directory / "ca.pem")


# ---------------------------------------------------------------- the applier


def target_names(count: int) -> list[str]:
    width = max(4, len(str(count - 1)))
    return [f"hook-{index:0{width}d}" for index in range(count)]


def hook_path(target: str) -> str:
    return "/hook/" + target.removeprefix("hook-")


def write_desired(directory: Path, receiver: Receiver, targets: list[str]) -> None:
    base = f"https://127.0.0.1:{receiver.port}"
    document = {
        "kms": {"local": {}},
        "issuers": {"ca": {"local_ca": {"common_name": "bench fan-out CA"}}},
        "targets": {
            target: {"webhook": {"url": base + hook_path(target), "secret_env": SECRET_ENV,
                                 "ca_bundle": str(receiver.ca), "timeout": "60s"}}
            for target in targets
        },
        "certificates": [{"name": NAME, "domains": list(DOMAINS), "issuer": "ca", "targets": targets}],
    }  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "certificates.yaml").write_text(yaml.safe_dump(document, sort_keys=False))


@dataclass(frozen=True)
class Run:
    label: str
    latency_ms: int
    concurrency: int
    planning: float  # the plan of the rotation (rotation_plan: the state loaded, every target's declaration)
    seconds: float
    applier_cpu: float
    receiver_cpu: float
    statements: int
    load: float


def check_served(store: PostgresStore, receiver: Receiver, targets: list[str], old: str | None) -> None:
    """The new certificate recorded as verified on every target, and the last one every URL received."""
    with store.session() as session:
        current = session.load_actual().certificates[NAME]
    assert current.fingerprint != old, "the certificate did not change"
    assert sorted(current.distributions) == targets, sorted(current.distributions)[:5]
    for target, state in current.distributions.items():
        assert state.verified_at is not None, (target, state)
        assert state.last_error is None, (target, state)
        assert state.fingerprint == current.fingerprint, (target, state)
    served = receiver.state()
    wrong = [target for target in targets if served.get(hook_path(target)) != current.fingerprint]
    assert not wrong, f"{len(wrong)} receivers do not have the new certificate: {wrong[:5]}"


def run_once(settings: Settings, store: PostgresStore, receiver: Receiver, targets: list[str], width: int,
             *, first: bool, latency: int = 0, profile: bool = False) -> Run:  # fmt: skip
    """One apply as the CLI runs it (a fresh environment): the first one (issue) or a forced rotation.

    ``width``: the fan-out (``apply --target-concurrency``); the changes' own concurrency is apply's default.
    """
    desired = load_desired(settings.desired_dir)
    clock = SystemClock()
    env = build_environment(desired, settings, store, clock)
    concurrency = CHANGE_CONCURRENCY
    if hasattr(env, "target_concurrency"):
        env = replace(env, target_concurrency=width)
    else:  # an older tree (PYTHONPATH): the fan-out was as wide as --concurrency
        concurrency = width
    with store.session() as session:
        actual = session.load_actual()
    previous = actual.certificates.get(NAME)
    planning = time.perf_counter()
    if first:
        plan = build_plan(desired, actual, Observations(), clock.now())
    else:
        plan = engine.rotation_plan(NAME, desired, store, clock.now(), settings=settings)
    assert plan.changes, "nothing to do"
    planning = time.perf_counter() - planning
    load = os.getloadavg()[0]
    cpu, receiver_cpu = own_cpu(), receiver.cpu()
    with ROUND_TRIPS.counting() as statements, profiled(profile, f"rotation at target concurrency {width}"):
        start = time.perf_counter()
        result = engine.apply(plan, desired, env, concurrency=concurrency)
        seconds = time.perf_counter() - start
    cpu, receiver_cpu = own_cpu() - cpu, receiver.cpu() - receiver_cpu
    assert result.ok, [failure.message for failure in result.failures][:5]
    check_served(store, receiver, targets, previous.fingerprint if previous else None)
    label = "first apply" if first else "rotation"
    return Run(label, latency, width, planning, seconds, cpu, receiver_cpu, len(statements), load)


@contextlib.contextmanager
def profiled(enabled: bool, label: str) -> Iterator[None]:
    """With ``enabled``: yappi over every thread (CPU clock), the 30 costliest functions printed after."""
    if not enabled:
        yield
        return
    import yappi

    yappi.set_clock_type("cpu")
    yappi.clear_stats()
    yappi.start()
    try:
        yield
    finally:
        yappi.stop()
        print(f"\n--- profile of the {label} (CPU, every thread; tsub = own time, ttot = with callees)")
        yappi.get_func_stats().sort("ttot").print_all(
            columns={0: ("name", 90), 1: ("ncall", 8), 2: ("tsub", 8), 3: ("ttot", 8)}, out=PrintOut()
        )


class PrintOut:
    """yappi prints to a stream; this prints the first 40 lines of it."""

    def __init__(self) -> None:
        self.lines = 0

    def write(self, text: str) -> None:
        for line in text.splitlines(keepends=True):
            if self.lines < 40:
                sys.stdout.write(line)
            self.lines += line.endswith("\n")


def median_run(runs: list[Run]) -> Run:
    """The run of median wall time (its other figures with it)."""
    return sorted(runs, key=lambda run: run.seconds)[len(runs) // 2]


def print_runs(runs: list[list[Run]], targets: int) -> None:
    print(f"| run | targets | receiver latency ms | target concurrency | plan s | wall s (median of {len(runs[-1])})"
          " | spread s | targets/s | applier CPU s | applier CPU ms/target | receiver CPU ms/target"
          " | SQL statements | load |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for repeats in runs:
        run = median_run(repeats)
        spread = f"{min(r.seconds for r in repeats):.2f}–{max(r.seconds for r in repeats):.2f}"
        print(
            f"| {run.label} | {targets} | {run.latency_ms} | {run.concurrency} | {run.planning:.2f} | {run.seconds:.2f}"
            f" | {spread}"
            f" | {targets / run.seconds:.0f} | {run.applier_cpu:.2f} | {run.applier_cpu / targets * 1000:.2f}"
            f" | {run.receiver_cpu / targets * 1000:.2f} | {run.statements} | {run.load:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--concurrency", default="1,8,32,128", help="fan-out widths (apply --target-concurrency)")
    parser.add_argument("--latency-ms", default="0,20", help="receiver answer delays; width 1 only at the first")
    parser.add_argument("--repeat", type=int, default=1, help="rotations per concurrency level (the median is shown)")
    parser.add_argument("--profile", action="store_true", help="profile (yappi, every thread) the last rotation")
    parser.add_argument("--url", default=None, help="admin URL of a PostgreSQL server (may CREATE DATABASE)")
    parser.add_argument("--receiver", type=Path, default=None, help=argparse.SUPPRESS)  # the receiver's own process
    args = parser.parse_args()
    if args.receiver is not None:
        serve(args.receiver)
        return
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    levels = [int(level) for level in args.concurrency.split(",")]
    targets = target_names(args.targets)
    ROUND_TRIPS.install()
    print(f"load average at start: {' '.join(f'{value:.2f}' for value in os.getloadavg())} ({os.cpu_count()} CPUs)")
    with tempfile.TemporaryDirectory(prefix="certreconcile-bench-fanout-") as temporary:
        scratch = Path(temporary)
        admin = admin_url(args, scratch)
        url = fresh_database(admin, "certreconcile_bench_fanout")
        store = PostgresStore(url)
        receiver = start_receiver(scratch / "receiver")
        try:
            directory = scratch / "applier" / "desired"
            write_desired(directory, receiver, targets)
            settings = Settings(
                desired_dir=directory,
                data_dir=directory / ".certreconcile",
                database_url=url,
                env={"CERTRECONCILE_LOCAL_KMS_KEY_FILE": str(scratch / "applier" / "kms.key"), "USER": "bench",
                     SECRET_ENV: "bench-fanout-secret"},
            )  # fmt: skip
            runs = [[run_once(settings, store, receiver, targets, max(levels), first=True)]]
            for index, latency in enumerate(int(value) for value in args.latency_ms.split(",")):
                receiver.answer_after(latency)
                for level in levels if index == 0 else [level for level in levels if level > 1]:
                    profile = args.profile and level == levels[-1] and index == 0
                    runs.append([run_once(settings, store, receiver, targets, level, first=False, latency=latency,
                                          profile=profile) for _ in range(max(1, args.repeat))])  # fmt: skip
            print_runs(runs, len(targets))
            print(f"\nevery run checked: {len(targets)} distributions verified with the new fingerprint, and every"
                  f" receiver URL's last delivery is that fingerprint (median rotation CPU of this process:"
                  f" {statistics.median(r.applier_cpu for rs in runs[1:] for r in rs):.2f} s)")  # fmt: skip
        finally:
            receiver.stop()


if __name__ == "__main__":
    main()
