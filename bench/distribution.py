"""Benchmark: distribute and verify ONE certificate to 100 nginx server blocks, `apply --concurrency 1` and `16`.

    python bench/distribution.py [--blocks 100] [--concurrency 1,16] [--url ADMIN_URL]

One real nginx (Debian ``nginx``) runs 100 ``server`` blocks, each on its own 127.0.0.1 port
and with its own certificate folder. The desired state declares 100 ``nginx`` targets (one per
block: its ``cert_dir``, the shared ``pid_file`` and ``nginx -t`` of the shared configuration,
``verify`` = the block's port) and one certificate (local CA, ECDSA P-256) deployed to all of
them. Measured: ``apply_plan`` of that one issue, from the key to the last handshake verified
(every target: write files atomically, ``nginx -t``, SIGHUP, handshake until the new leaf is
served). Each run uses a fresh database; nginx keeps running between runs.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from certreconcile.actual.model import Observations
from certreconcile.actual.repository import PostgresStore
from certreconcile.apply.executor import apply_plan
from certreconcile.clock import SystemClock
from certreconcile.desired import load_desired
from certreconcile.plan import build_plan
from certreconcile.plugins.targets.handshake import observe_served
from certreconcile.wiring import Settings, build_environment

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from issuance import admin_url, free_port, fresh_database
from web_servers import find_server_binary, self_signed_bundle, write_initial_files

DOMAINS = ("shop.bench.test", "www.shop.bench.test")


@contextlib.contextmanager
def nginx(workdir: Path, blocks: int) -> Iterator[tuple[Path, Path, list[int]]]:
    binary = find_server_binary("nginx")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "temp").mkdir(exist_ok=True)
    ports = [free_port() for _ in range(blocks)]
    servers = []
    for index, port in enumerate(ports):
        folder = workdir / f"certs-{index:03d}"
        write_initial_files(folder, self_signed_bundle("shop", DOMAINS))
        servers.append(
            f"  server {{ listen 127.0.0.1:{port} ssl; server_name {' '.join(DOMAINS)};\n"
            f"    ssl_certificate {folder}/shop/fullchain.pem; ssl_certificate_key {folder}/shop/privkey.pem;\n"
            "    return 204; }\n"
        )
    config = workdir / "nginx.conf"
    temp = workdir / "temp"
    config.write_text(
        f"worker_processes 1;\npid {workdir}/nginx.pid;\nerror_log {workdir}/error.log;\n"
        "events { worker_connections 1024; }\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {temp}; proxy_temp_path {temp};\n"
        f"  fastcgi_temp_path {temp}; uwsgi_temp_path {temp}; scgi_temp_path {temp};\n" + "".join(servers) + "}\n"
    )
    base = [binary, "-c", str(config), "-p", str(workdir), "-e", str(workdir / "error.log")]
    process = subprocess.Popen([*base, "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if observe_served(f"127.0.0.1:{ports[-1]}", DOMAINS).fingerprint:
                break
            time.sleep(0.05)
        yield config, workdir / "nginx.pid", ports
    finally:
        process.terminate()
        process.wait(timeout=10)


def write_desired(directory: Path, workdir: Path, config: Path, pid_file: Path, ports: list[int]) -> None:
    binary = find_server_binary("nginx")
    lines = ["kms: {local: {}}", "issuers:", "  ca: {local_ca: {common_name: bench CA}}", "targets:"]
    for index, port in enumerate(ports):
        lines += [
            f"  block-{index:03d}:",
            f"    nginx: {{cert_dir: {workdir}/certs-{index:03d}, pid_file: {pid_file},"
            f' test_command: "{binary} -t -q -c {config} -p {workdir}"}}',
            f'    verify: "127.0.0.1:{port}"',
        ]
    lines += [
        "certificates:",
        f"  - {{name: shop, domains: [{', '.join(DOMAINS)}], issuer: ca,"
        f" targets: [{', '.join(f'block-{i:03d}' for i in range(len(ports)))}]}}",
    ]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "certificates.yaml").write_text("\n".join(lines) + "\n")


def run_once(admin: str, scratch: Path, setup: tuple[Path, Path, list[int]], concurrency: int) -> float:
    config, pid_file, ports = setup
    directory = scratch / f"repo-{concurrency}"
    write_desired(directory, scratch / "nginx", config, pid_file, ports)
    url = fresh_database(admin, f"certreconcile_bench_distribution_{concurrency}")
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
        plan = build_plan(desired, session.load_actual(), Observations(), clock.now())
    start = time.perf_counter()
    result = apply_plan(plan, desired, env, concurrency=concurrency)
    elapsed = time.perf_counter() - start
    assert result.ok, [failure.message for failure in result.failures]
    with store.session() as session:
        current = session.load_actual().certificates["shop"]
    assert len(current.distributions) == len(ports)
    assert all(d.verified_at is not None for d in current.distributions.values())
    assert all(observe_served(f"127.0.0.1:{port}", DOMAINS).fingerprint == current.fingerprint for port in ports)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=100)
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--url", default=None, help="admin URL of a PostgreSQL server (may CREATE DATABASE)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="certreconcile-bench-") as temporary:
        scratch = Path(temporary)
        admin = admin_url(args, scratch)
        with nginx(scratch / "nginx", args.blocks) as setup:
            print(f"{'blocks':>6} {'concurrency':>11} {'apply (s)':>10} {'per target (ms)':>16}")
            for concurrency in (int(level) for level in args.concurrency.split(",")):
                seconds = run_once(admin, scratch, setup, concurrency)
                print(f"{args.blocks:>6} {concurrency:>11} {seconds:>10.2f} {seconds / args.blocks * 1000:>16.1f}")


if __name__ == "__main__":
    main()
