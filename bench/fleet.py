"""Benchmark: rotate ONE certificate on 50 agents (separate processes) x 2 targets each, verified.

    python bench/fleet.py [--agents 50] [--targets-per-agent 2] [--concurrency 1,8,32] [--url ADMIN_URL]

Each agent host is a folder with its own nginx (Debian ``nginx``, ``worker_processes 1``) running
one ``server`` block per target, each on its own 127.0.0.1 port with its own certificate folder,
and its own ``certreconcile agent`` process (``python -m certreconcile agent --config``, started
in an environment without any database or KMS setting) whose configuration declares those blocks
as local ``nginx`` targets (``cert_dir``, the host's ``pid_file``, ``nginx -t``, ``verify`` = the
block's port). The agent's key and CSR are made by the agent's own code; the enrolment is
``enrol_agent`` against the bench's one database, which holds the fleet CA the agents trust.

The desired state declares the agents (``agents:``) and one certificate (local CA, ECDSA P-256)
deployed to every ``agent-NN/tK`` (100 targets by default). Measured, as the CLI does it:

* agent start: the agents are launched together; each one's time from launch to listening (the
  configuration read, its certificate checked, the port bound), and their resident memory;
* first apply: the plan of the empty database, applied: issue, then distribute to every target;
* one forced rotation per concurrency level (``engine.rotation_plan``, as ``certreconcile rotate``,
  applied by ``engine.apply(concurrency=N)``): a new key, issue, and for every target a mutual-TLS
  request to its agent, which writes the files, runs ``nginx -t``, reloads nginx and proves by a
  handshake that the new leaf is served. Wall time from the start to the last target verified.

Each run builds a fresh applier environment (so it mints its applier identity, as a CLI process
would). Each run is checked: no failure, every distribution recorded as verified with the new
fingerprint, and a handshake to every block serves it. Reported per run: wall time, wall time per
target, the CPU time of this (the applier) process per target, and that of the agents (their
children, ``nginx -t``, included) per target. Compare with the local figure of
``bench/distribution.py`` (one nginx with 100 blocks, deployed by the applier itself).
The machine's load average is printed: other work on the machine slows every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from certreconcile import engine
from certreconcile.actual.model import Observations
from certreconcile.actual.repository import PostgresStore
from certreconcile.agent.identity import agent_csr, ensure_key
from certreconcile.clock import SystemClock
from certreconcile.desired import load_desired
from certreconcile.fleet.enrol import enrol_agent
from certreconcile.plan import build_plan
from certreconcile.plugins.ports import DeployBundle
from certreconcile.plugins.registry import create_kms
from certreconcile.plugins.targets.handshake import observe_served
from certreconcile.wiring import Settings, build_environment

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fleet_support import agent_command, agent_env
from issuance import admin_url, free_port, fresh_database, machine_cpu
from web_servers import find_server_binary, self_signed_bundle, write_initial_files

NAME = "shop"
DOMAINS = ("shop.bench.test", "www.shop.bench.test")
START_TIMEOUT = 120.0  # 50 Python processes starting at once on 2 busy cores take a while


@dataclass
class Host:
    """One agent host: its folder, its nginx (one block per target) and its agent."""

    name: str
    directory: Path
    ports: list[int]  # one nginx server block per target
    agent_port: int
    nginx: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    agent: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    started_in: float = 0.0  # seconds from launch to listening
    start_cpu: float = 0.0  # CPU seconds the agent spent until then

    @property
    def nginx_conf(self) -> Path:
        return self.directory / "nginx" / "nginx.conf"

    @property
    def config(self) -> Path:
        return self.directory / "agent.yaml"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.agent_port}"

    def targets(self) -> list[str]:
        return [f"{self.name}/t{index}" for index in range(len(self.ports))]


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def stop_all(hosts: list[Host]) -> None:
    """SIGTERM to every agent, then every nginx, all at once; then wait for each (SIGKILL after 20 s)."""
    for attribute in ("agent", "nginx"):
        processes = [getattr(host, attribute) for host in hosts]
        for process in processes:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            stop(process)


def write_nginx(host: Host, binary: str, bundle: DeployBundle) -> list[str]:
    """The host's nginx configuration and its first (self-signed) files; its command line."""
    workdir = host.directory / "nginx"
    temp = workdir / "temp"
    temp.mkdir(parents=True)
    servers = []
    for index, port in enumerate(host.ports):
        folder = workdir / f"certs-t{index}"
        write_initial_files(folder, bundle)
        servers.append(
            f"  server {{ listen 127.0.0.1:{port} ssl; server_name {' '.join(DOMAINS)};\n"
            f"    ssl_certificate {folder}/{NAME}/fullchain.pem; ssl_certificate_key {folder}/{NAME}/privkey.pem;\n"
            "    return 204; }\n"
        )
    host.nginx_conf.write_text(
        f"worker_processes 1;\npid {workdir}/nginx.pid;\nerror_log {workdir}/error.log;\n"
        "events { worker_connections 256; }\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {temp}; proxy_temp_path {temp};\n"
        f"  fastcgi_temp_path {temp}; uwsgi_temp_path {temp}; scgi_temp_path {temp};\n" + "".join(servers) + "}\n"
    )
    return [binary, "-c", str(host.nginx_conf), "-p", str(workdir), "-e", str(workdir / "error.log")]


def write_agent_config(host: Host, binary: str) -> None:
    workdir = host.directory / "nginx"
    test_command = f"{binary} -t -q -c {host.nginx_conf} -p {workdir} -e {workdir / 'error.log'}"
    targets = {
        f"t{index}": {
            "nginx": {"cert_dir": str(workdir / f"certs-t{index}"), "pid_file": str(workdir / "nginx.pid"),
                      "test_command": test_command},
            "verify": f"127.0.0.1:{port}",
            "verify_timeout": "60s",
        }
        for index, port in enumerate(host.ports)
    }  # fmt: skip
    document = {
        "name": host.name,
        "listen": f"127.0.0.1:{host.agent_port}",
        "tls": {"key_file": "tls/agent.key", "cert_file": "tls/agent.crt", "ca_file": "tls/fleet-ca.crt"},
        "targets": targets,
    }
    host.config.write_text(yaml.safe_dump(document, sort_keys=False))


def write_desired(directory: Path, hosts: list[Host]) -> None:
    document = {
        "kms": {"local": {}},
        "issuers": {"ca": {"local_ca": {"common_name": "bench fleet CA"}}},
        "agents": {host.name: {"url": host.url, "timeout": "120s"} for host in hosts},
        "targets": {},
        "certificates": [
            {"name": NAME, "domains": list(DOMAINS), "issuer": "ca",
             "targets": [target for host in hosts for target in host.targets()]}
        ],
    }  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "certificates.yaml").write_text(yaml.safe_dump(document, sort_keys=False))


def wait_served(hosts: list[Host]) -> None:
    """Until every block of every nginx answers a handshake."""
    deadline = time.monotonic() + START_TIMEOUT
    for host in hosts:
        for port in host.ports:
            while observe_served(f"127.0.0.1:{port}", DOMAINS).fingerprint is None:
                assert host.nginx is not None, host.name
                assert host.nginx.poll() is None, f"nginx of {host.name} exited"
                assert time.monotonic() < deadline, f"nginx of {host.name} does not serve {port}"
                time.sleep(0.05)


def listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def start_agents(hosts: list[Host]) -> float:
    """Launch every agent at once; wait until each listens (its time recorded); the wall time of it all."""
    env = agent_env()
    launched = time.perf_counter()
    for host in hosts:
        with (host.directory / "agent.log").open("ab") as log:
            host.agent = subprocess.Popen(agent_command(host.config), env=env, stdout=log, stderr=subprocess.STDOUT,
                                          cwd=host.directory)  # fmt: skip
    waiting = list(hosts)
    while waiting:
        for host in list(waiting):
            assert host.agent is not None
            if host.agent.poll() is not None:
                log = (host.directory / "agent.log").read_text(errors="replace")[-2000:]
                raise SystemExit(f"agent {host.name} exited with {host.agent.returncode}: {log}")
            if listening(host.agent_port):
                host.started_in = time.perf_counter() - launched
                host.start_cpu = tree_cpu(host.agent.pid)
                waiting.remove(host)
        if waiting:
            if time.perf_counter() - launched > START_TIMEOUT:
                raise SystemExit(f"agents not listening after {START_TIMEOUT:.0f} s: {[h.name for h in waiting]}")
            time.sleep(0.02)
    return time.perf_counter() - launched


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and of its children waited for (``nginx -t``), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def agents_cpu(hosts: list[Host]) -> float:
    return sum(tree_cpu(host.agent.pid) for host in hosts if host.agent is not None)


def free_ports(count: int, taken: set[int]) -> list[int]:
    """``count`` free ports, none of them in ``taken`` (which they join)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in taken:
            taken.add(port)
            ports.append(port)
    return ports


@contextlib.contextmanager
def hosts_running_nginx(scratch: Path, count: int, per_agent: int) -> Iterator[list[Host]]:
    """``count`` host folders, each with its nginx serving ``per_agent`` blocks (self-signed); all stopped after."""
    binary = find_server_binary("nginx")
    bundle = self_signed_bundle(NAME, DOMAINS)
    width = max(2, len(str(count - 1)))
    taken: set[int] = set()
    hosts: list[Host] = []
    try:
        for index in range(count):
            name = f"agent-{index:0{width}d}"
            directory = scratch / "hosts" / name
            directory.mkdir(parents=True, mode=0o700)
            ports = free_ports(per_agent + 1, taken)
            host = Host(name, directory, ports[:-1], ports[-1])
            hosts.append(host)
            command = write_nginx(host, binary, bundle)
            host.nginx = subprocess.Popen([*command, "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL)  # fmt: skip
            write_agent_config(host, binary)
        wait_served(hosts)
        yield hosts
    finally:
        stop_all(hosts)


def enrol_all(hosts: list[Host], settings: Settings, store: PostgresStore, desired_dir: Path) -> float:
    """Each agent's key and CSR (the agent's code), signed by ``enrol_agent``; the files written. Seconds taken."""
    desired = load_desired(desired_dir)
    kms = create_kms(desired.kms, settings.plugin_context)
    clock = SystemClock()
    start = time.perf_counter()
    for host in hosts:
        tls = host.directory / "tls"
        key, _made = ensure_key(tls / "agent.key")
        enrolment = enrol_agent(store, kms, host.name, agent_csr(key, host.name), clock.now(), "bench")
        (tls / "agent.crt").write_text(enrolment.row.cert_pem)
        (tls / "fleet-ca.crt").write_text(enrolment.ca_pem)
    return time.perf_counter() - start


@dataclass(frozen=True)
class Run:
    label: str
    concurrency: int
    seconds: float
    applier_cpu: float
    agents_cpu: float
    load: float
    machine_busy: float  # share of all CPUs busy during the run (anyone's work)


def check_served(store: PostgresStore, hosts: list[Host], old: str | None) -> None:
    """The new certificate recorded as verified on every target, and served by every block."""
    with store.session() as session:
        current = session.load_actual().certificates[NAME]
    assert current.fingerprint != old, "the certificate did not change"
    targets = [target for host in hosts for target in host.targets()]
    assert sorted(current.distributions) == sorted(targets), sorted(current.distributions)[:5]
    for target, state in current.distributions.items():
        assert state.verified_at is not None, (target, state)
        assert state.fingerprint == current.fingerprint, (target, state)
    for host in hosts:
        for port in host.ports:
            served = observe_served(f"127.0.0.1:{port}", DOMAINS).fingerprint
            assert served == current.fingerprint, (host.name, port, served)


def run_once(settings: Settings, store: PostgresStore, hosts: list[Host], concurrency: int, *, first: bool) -> Run:
    """One apply as the CLI runs it (a fresh environment): the first one (issue) or a forced rotation."""
    desired = load_desired(settings.desired_dir)
    clock = SystemClock()
    env = build_environment(desired, settings, store, clock)
    with store.session() as session:
        actual = session.load_actual()
    previous = actual.certificates.get(NAME)
    if first:
        plan = build_plan(desired, actual, Observations(), clock.now())
    else:
        plan = engine.rotation_plan(NAME, desired, store, clock.now(), settings=settings)
    assert plan.changes, "nothing to do"
    load = os.getloadavg()[0]
    cpu, agents, machine = own_cpu(), agents_cpu(hosts), machine_cpu()
    start = time.perf_counter()
    result = engine.apply(plan, desired, env, concurrency=concurrency)
    seconds = time.perf_counter() - start
    cpu, agents, machine = own_cpu() - cpu, agents_cpu(hosts) - agents, machine_cpu() - machine
    assert result.ok, [failure.message for failure in result.failures][:5]
    check_served(store, hosts, previous.fingerprint if previous else None)
    busy = machine / (seconds * (os.cpu_count() or 1))
    return Run("first apply" if first else "rotation", concurrency, seconds, cpu, agents, load, busy)


def print_start(hosts: list[Host], alone: float, together: float) -> None:
    rest = sorted(host.started_in for host in hosts[1:]) or [alone]
    rss = [rss_mib(host.agent.pid) for host in hosts if host.agent is not None]
    print(
        f"agent start: one alone {alone:.2f} s; the other {len(hosts) - 1} launched together: all listening"
        f" after {together:.2f} s (each: median {statistics.median(rest):.2f} s, max {rest[-1]:.2f} s)"
    )
    cpu = statistics.median(host.start_cpu for host in hosts)
    print(
        f"agent start CPU: median {cpu:.2f} s per agent ({len(hosts)} agents: {cpu * len(hosts):.0f} CPU-seconds"
        f" on {os.cpu_count()} CPUs)"
    )
    print(
        f"agent memory (RSS after start): median {statistics.median(rss):.1f} MiB, total {sum(rss):.0f} MiB"
        f" for {len(rss)} agents"
    )


def print_runs(runs: list[Run], agents: int, targets: int) -> None:
    print(
        f"{'run':<12} {'agents':>6} {'targets':>7} {'concurrency':>11} {'wall (s)':>9} {'per target (ms)':>16}"
        f" {'applier CPU/target (ms)':>24} {'agents CPU/target (ms)':>23} {'load':>5} {'machine busy':>12}"
    )
    for run in runs:
        print(
            f"{run.label:<12} {agents:>6} {targets:>7} {run.concurrency:>11} {run.seconds:>9.2f}"
            f" {run.seconds / targets * 1000:>16.1f} {run.applier_cpu / targets * 1000:>24.1f}"
            f" {run.agents_cpu / targets * 1000:>23.1f} {run.load:>5.2f} {run.machine_busy:>12.0%}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--targets-per-agent", type=int, default=2)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--url", default=None, help="admin URL of a PostgreSQL server (may CREATE DATABASE)")
    args = parser.parse_args()
    # SIGTERM (and SIGINT even when a shell started us in the background) ends the run through the
    # `finally` blocks, which stop every agent and nginx.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    levels = [int(level) for level in args.concurrency.split(",")]
    targets = args.agents * args.targets_per_agent
    print(f"load average at start: {' '.join(f'{value:.2f}' for value in os.getloadavg())} ({os.cpu_count()} CPUs)")
    with tempfile.TemporaryDirectory(prefix="certreconcile-bench-fleet-") as temporary:
        scratch = Path(temporary)
        admin = admin_url(args, scratch)
        url = fresh_database(admin, "certreconcile_bench_fleet")
        store = PostgresStore(url)
        with hosts_running_nginx(scratch, args.agents, args.targets_per_agent) as hosts:
            directory = scratch / "applier" / "desired"
            write_desired(directory, hosts)
            settings = Settings(
                desired_dir=directory,
                data_dir=directory / ".certreconcile",
                database_url=url,
                env={"CERTRECONCILE_LOCAL_KMS_KEY_FILE": str(scratch / "applier" / "kms.key"), "USER": "bench"},
            )
            enrolled = enrol_all(hosts, settings, store, directory)
            print(f"enrolment: {args.agents} agents in {enrolled:.2f} s ({enrolled / args.agents * 1000:.1f} ms each)")
            alone = start_agents(hosts[:1])
            together = start_agents(hosts[1:]) if len(hosts) > 1 else alone
            print_start(hosts, alone, together)
            runs = [run_once(settings, store, hosts, max(levels), first=True)]
            runs += [run_once(settings, store, hosts, level, first=False) for level in levels]
            print_runs(runs, args.agents, targets)
    print(
        "compare: `python bench/distribution.py` deploys the same certificate to 100 blocks of ONE local nginx"
        " from the applier itself (no agent): the difference per target is the agent hop (mutual TLS, one request each)"
    )


if __name__ == "__main__":
    main()
