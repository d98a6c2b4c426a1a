"""The clients that ``bench/peers.py`` times against Pebble, and what they share.

The bare ``acme`` library (a minimal script, in this process), certbot (from PyPI, in a venv of its
own) and lego (Debian): each issues N certificates of 3 names with EC P-256 keys, and what it
stored or returned is parsed and checked (``check_certificates``) after the clock stops.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from issuance import TESTS, process_cpu

if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))
from kms_servers import free_port_outside_ephemeral  # the test helpers, on the path above


def names(index: int) -> list[str]:
    """The names of certificate ``index``, as ``issuance.write_desired`` declares them."""
    return [f"svc-{index}.bench.test", f"www.svc-{index}.bench.test", f"api.svc-{index}.bench.test"]


@dataclass
class Sample:
    seconds: float
    client_cpu: float
    pebble_cpu: float
    database_cpu: float | None = None


@dataclass
class Bench:
    scratch: Path
    args: argparse.Namespace
    python_env: dict[str, str]
    admin: str = ""
    database_cpu: Callable[[], float] | None = None
    # the Pebble of the current measurement
    directory: str = ""  # its ACME directory
    ca: Path = Path()  # the CA of its HTTPS certificate
    http01: int = 0
    pebble_pid: int = 0
    pebbles: int = 0  # started so far


def check_certificates(tool: str, pems: Iterable[bytes], count: int) -> None:
    """Fail unless ``pems`` are the N certificates expected: names 0..N-1, one each, P-256 keys."""
    expected = {frozenset(names(index)) for index in range(count)}
    found: list[frozenset[str]] = []
    for pem in pems:
        certificate = x509.load_pem_x509_certificate(pem)
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = frozenset(san.get_values_for_type(x509.DNSName))
        key = certificate.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise AssertionError(f"{tool}: the certificate of {sorted(dns)} has no P-256 key")
        found.append(dns)
    if len(found) != count or set(found) != expected:
        raise AssertionError(f"{tool}: {len(found)} certificates, {len(set(found) & expected)} of the {count} expected")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(bench: Bench, cpu: Callable[[], float], work: Callable[[], None], database: bool = False) -> Sample:
    db_start = bench.database_cpu() if database and bench.database_cpu else None
    start = (time.perf_counter(), cpu(), process_cpu(bench.pebble_pid))
    work()
    end = (time.perf_counter(), cpu(), process_cpu(bench.pebble_pid))
    db = bench.database_cpu() - db_start if bench.database_cpu and db_start is not None else None
    return Sample(end[0] - start[0], end[1] - start[1], end[2] - start[2], db)


def run_command(argv: list[str], env: dict[str, str], timeout: float = 120) -> None:
    """Run one command (killed after ``timeout`` seconds); fail with the end of its output unless it exits 0."""
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{Path(argv[0]).name} {argv[1]} still running after {timeout:.0f} s: killed") from None
    if done.returncode != 0:
        tail = (done.stderr.strip() or done.stdout.strip())[-600:]
        raise AssertionError(f"{Path(argv[0]).name} {argv[1]} exited {done.returncode}: {tail}")


def run_slots(slots: list[list[list[str]]], env: dict[str, str]) -> None:
    """Each slot's commands one after the other, the slots side by side; the first failure stops every slot."""
    failed = threading.Event()

    def serially(commands: list[list[str]]) -> None:
        for argv in commands:
            if failed.is_set():
                return
            try:
                run_command(argv, env)
            except BaseException:
                failed.set()
                raise

    with concurrent.futures.ThreadPoolExecutor(len(slots)) as pool:
        for future in [pool.submit(serially, commands) for commands in slots]:
            future.result()


# the bare acme library


def poll(fetch: Callable[[], Any], done: Callable[[Any], bool], what: str) -> Any:
    """Short polls (5 ms, doubling to 250 ms): what a client without fixed sleeps does."""
    delay = 0.005
    for _ in range(100):
        value = fetch()
        if done(value):
            return value
        time.sleep(delay)
        delay = min(2 * delay, 0.25)
    raise AssertionError(f"acme: {what} still pending after 100 polls")


def acme_issue(client: Any, account_key: Any, domains: list[str]) -> bytes:
    """One certificate through the library's primitives: order, answer, poll, finalize, download."""
    from acme import challenges, crypto_util, messages

    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    order = client.new_order(crypto_util.make_csr(key_pem, domains))
    for authorization in order.authorizations:
        challenge = next(c for c in authorization.body.challenges if isinstance(c.chall, challenges.HTTP01))
        client.answer_challenge(challenge, challenge.response(account_key))
    for authorization in order.authorizations:
        status = poll(
            lambda a=authorization: client.poll(a)[0].body.status,
            lambda s: s != messages.STATUS_PENDING,
            "an authorization",
        )
        assert status == messages.STATUS_VALID, status
    body = client.begin_finalization(order).body
    if body.status != messages.STATUS_VALID:
        body = poll(
            lambda: messages.Order.from_json(client._post_as_get(order.uri).json()),
            lambda b: b.status in {messages.STATUS_VALID, messages.STATUS_INVALID},
            "the order",
        )
    assert body.status == messages.STATUS_VALID, body.status
    return bytes(client._post_as_get(body.certificate).content)


def acme_floor(bench: Bench, count: int, threads: int) -> Sample:
    import josepy as jose
    from acme import client as acme_client
    from acme import messages

    account_key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))

    def connect(account: Any = None) -> Any:
        net = acme_client.ClientNetwork(
            account_key,
            account=account,
            alg=jose.ES256,
            verify_ssl=str(bench.ca),
            user_agent="certreconcile-bench-peers",
        )
        return acme_client.ClientV2(acme_client.ClientV2.get_directory(bench.directory, net), net)

    account = connect().new_account(messages.NewRegistration.from_data(terms_of_service_agreed=True))
    local = threading.local()
    pems: list[bytes] = []

    def issue(index: int) -> bytes:
        if not hasattr(local, "client"):
            local.client = connect(account)
        return acme_issue(local.client, account_key, names(index))

    def work() -> None:
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            pems.extend(pool.map(issue, range(count)))

    sample = timed(bench, time.process_time, work)
    check_certificates("acme", pems, count)
    return sample


# certbot and lego: one process per certificate, P slots side by side


def slot_processes(
    bench: Bench,
    tool: str,
    count: int,
    processes: int,
    make_argv: Callable[..., list[str]],
    env: dict[str, str],
    stored: Callable[[Path], Iterable[bytes]],
) -> Sample:
    root = bench.scratch / f"{tool}-{processes}"
    shutil.rmtree(root, ignore_errors=True)
    processes = min(processes, count)
    slots = [root / f"slot-{slot}" for slot in range(processes)]
    warm_names = [f"warm-{slot}.{tool}.test" for slot in range(processes)]
    run_slots([[make_argv(slot, path, "warm", [warm_names[slot]])] for slot, path in enumerate(slots)], env)
    work = [
        [make_argv(slot, path, f"c{index}", names(index)) for index in range(slot, count, processes)]
        for slot, path in enumerate(slots)
    ]
    sample = timed(bench, children_cpu, lambda: run_slots(work, env))
    check_certificates(tool, stored(root), count)
    return sample


def last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1][-300:] if lines else "no output"


def certbot_install(venv: Path, spec: str) -> tuple[Path | None, str]:
    """certbot from PyPI in a venv of its own (made once, then reused): (its binary, version) or (None, why not)."""
    binary = venv / "bin" / "certbot"
    if not binary.exists():
        print(f"installing {spec} into {venv} (once)", file=sys.stderr)
        shutil.rmtree(venv, ignore_errors=True)
        steps = {
            "python -m venv": [sys.executable, "-m", "venv", str(venv)],
            f"pip install {spec}": [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                                    "--disable-pip-version-check", spec],
        }  # fmt: skip
        for step, argv in steps.items():
            done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=900)
            if done.returncode != 0:
                shutil.rmtree(venv, ignore_errors=True)
                return None, f"`{step}` failed: {last_line(done.stderr or done.stdout)}"
    done = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return None, f"{binary} --version failed (remove {venv} to reinstall): {last_line(done.stderr)}"
    return binary, done.stdout.strip().removeprefix("certbot ")


def certbot(bench: Bench, binary: Path, count: int, processes: int) -> Sample:
    def make_argv(_slot: int, path: Path, name: str, domains: list[str]) -> list[str]:
        argv = [
            str(binary),
            "certonly",
            "--non-interactive",
            "--agree-tos",
            "--register-unsafely-without-email",
            "--server",
            bench.directory,
            "--config-dir",
            str(path / "config"),
            "--work-dir",
            str(path / "work"),
            "--logs-dir",
            str(path / "logs"),
            "--manual",
            "--preferred-challenges",
            "http",
            "--manual-auth-hook",
            "true",
            "--key-type",
            "ecdsa",
            "--elliptic-curve",
            "secp256r1",
            "--cert-name",
            name,
        ]
        return argv + [arg for domain in domains for arg in ("-d", domain)]

    def stored(root: Path) -> list[bytes]:
        return [path.read_bytes() for path in root.glob("slot-*/config/live/c*/cert.pem")]

    env = {**bench.python_env, "REQUESTS_CA_BUNDLE": str(bench.ca)}
    return slot_processes(bench, "certbot", count, processes, make_argv, env, stored)


def lego(bench: Bench, binary: str, count: int, processes: int) -> Sample:
    ports = [free_port_outside_ephemeral() for _ in range(processes)]  # each process binds its slot's port

    def make_argv(slot: int, path: Path, _name: str, domains: list[str]) -> list[str]:
        argv = [
            binary,
            "--server",
            bench.directory,
            "--accept-tos",
            "--email",
            "bench@bench.test",
            "--path",
            str(path),
            "--key-type",
            "ec256",
            "--http",
            "--http.port",
            f"127.0.0.1:{ports[slot]}",
        ]
        return [*argv, *[arg for domain in domains for arg in ("--domains", domain)], "run"]

    def stored(root: Path) -> list[bytes]:
        return [
            p.read_bytes() for p in root.glob("slot-*/certificates/svc-*.crt") if not p.name.endswith(".issuer.crt")
        ]

    env = {**os.environ, "LEGO_CA_CERTIFICATES": str(bench.ca)}
    return slot_processes(bench, "lego", count, processes, make_argv, env, stored)
