"""CA faults through the CLI against Pebble (real HTTP-01 validation); the next apply finishes.

* Pebble rejecting a quarter of the nonces (``PEBBLE_WFE_NONCEREJECT``): every ``badNonce`` is
  retried at once with a fresh nonce (bounded), and the apply succeeds as if nothing happened.
* The CA unreachable (a closed port) and answering 503 with ``Retry-After`` (a proxy in front of
  Pebble), the DNS provider's server hanging up (a relay in front of BIND): the affected
  certificates fail with their code, the others are done, and nothing is backed off, so the next
  apply, once the fault is gone, finishes.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from acme_servers import AriProxy, ChallTestSrv, Pebble, start_pebble
from dns_servers import BindServer
from e2e.conftest import Runner
from e2e.faults import assert_converges, assert_isolated, record, secrets_of
from e2e.test_acme_dns01 import dns01_doc
from kms_servers import free_port

pytestmark = pytest.mark.integration

_KINDS = (("/nonce-plz", "newNonce"), ("/sign-me-up", "newAccount"), ("/order-plz", "newOrder"),
          ("/my-order/", "order"), ("/authZ/", "authz"), ("/chalZ/", "challenge"),
          ("/finalize-order/", "finalize"), ("/certZ/", "cert"))  # fmt: skip


def kind_of(path: str) -> str:
    return next((kind for prefix, kind in _KINDS if path.startswith(prefix)), "other")


class FaultProxy(AriProxy):
    """Pebble behind a proxy that answers 503 + ``Retry-After`` (serverInternal) as told, and counts requests.

    ``unavailable[kind]``: how many of the next requests of that kind get a 503; ``refused_names``:
    every newOrder naming one of them gets a 503.
    """

    def __init__(self, pebble: Pebble, workdir: Path, *, port: int = 0) -> None:
        super().__init__(pebble, workdir, port=port)
        self.requests: collections.Counter[str] = collections.Counter()
        self.answered_503: collections.Counter[str] = collections.Counter()
        self.unavailable: dict[str, int] = {}
        self.refused_names: set[str] = set()
        self.order_names: list[str] = []
        self.bad_nonces = 0  # badNonce refusals passed on from Pebble

    def _answer(self, handler: Any, status: int, headers: dict[str, str], body: bytes) -> None:  # type: ignore[override]
        if status == 400 and b"badNonce" in body:
            self.bad_nonces += 1
        AriProxy._answer(handler, status, headers, body)

    def _intercept(self, handler: Any, method: str, body: bytes) -> bool:
        kind = kind_of(handler.path)
        self.requests[kind] += 1
        refuse = self.unavailable.get(kind, 0) > 0
        if refuse:
            self.unavailable[kind] -= 1
        if kind == "newOrder":
            payload = json.loads(base64.urlsafe_b64decode(json.loads(body)["payload"] + "=="))
            names = {identifier["value"] for identifier in payload["identifiers"]}
            self.order_names.extend(sorted(names))
            refuse = refuse or bool(names & self.refused_names)
        if not refuse:
            return False
        self.answered_503[kind] += 1
        problem = {"type": "urn:ietf:params:acme:error:serverInternal", "detail": "down for maintenance"}
        headers = {"Content-Type": "application/problem+json", "Retry-After": "1"}
        self._answer(handler, 503, headers, json.dumps(problem).encode())
        return True


@pytest.fixture
def fault_proxy(pebble: Pebble, tmp_path: Path) -> Iterator[FaultProxy]:
    proxy = FaultProxy(pebble, tmp_path)
    try:
        yield proxy
    finally:
        proxy.close()


def doc(
    pebble: Pebble, directory: str, ca_bundle: Path, acme_names: list[str], local_names: list[str]
) -> dict[str, Any]:
    acme = {
        "directory": directory,
        "ca_bundle": str(ca_bundle),
        "http01": {"standalone": {"listen": f"127.0.0.1:{pebble.http01_port}"}},
        "order_timeout": "60s",
    }
    certificates = [
        {"name": name, "domains": [f"{name}.fault.test"], "issuer": "pebble", "targets": ["deploy"]}
        for name in acme_names
    ] + [{"name": name, "domains": [f"{name}.example.com"], "issuer": "internal", "targets": ["deploy"]}
         for name in local_names]  # fmt: skip
    return {
        "kms": {"local": {}},
        "issuers": {
            "pebble": {"acme": acme},
            "internal": {"local_ca": {"common_name": "Fault CA", "lifetime": "90d"}},
        },
        "targets": {"deploy": {"files": {"dir": "out"}}},
        "certificates": certificates,
    }


def write(directory: Path, content: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "certificates.yaml").write_text(yaml.safe_dump(content, sort_keys=False))
    return directory


def test_pebble_rejecting_nonces(
    challtestsrv: ChallTestSrv, run_cli: Runner, tmp_path: Path, database_url: str
) -> None:
    names = ["n1", "n2", "n3", "n4"]
    with start_pebble(tmp_path / "pebble", challtestsrv.dns_address, PEBBLE_WFE_NONCEREJECT="25") as rejecting:
        proxy = FaultProxy(rejecting, tmp_path)  # only counts the refusals
        try:
            desired = write(tmp_path / "repo", doc(rejecting, proxy.directory_url, proxy.ca_bundle, names, []))
            applied = assert_converges(run_cli, desired)
        finally:
            proxy.close()
    assert applied.stdout.count(": done: issued serial") == len(names)
    assert all((desired / "out" / name / "cert.pem").is_file() for name in names)
    assert proxy.bad_nonces > 0  # the fault did happen
    record("Pebble rejecting 25% of nonces", failed=[], done=names, converged=True, bad_nonces=proxy.bad_nonces)


def test_ca_unreachable(pebble: Pebble, run_cli: Runner, tmp_path: Path, database_url: str) -> None:
    port = free_port()
    first = FaultProxy(pebble, tmp_path, port=port)
    first.close()  # the CA goes down: nobody listens there during the first apply
    ca_bundle = first.ca_bundle
    desired = write(tmp_path / "repo", doc(pebble, f"https://127.0.0.1:{port}/dir", ca_bundle, ["web"], ["alpha"]))
    result = run_cli("apply", "--dir", str(desired), "--auto-approve")
    assert_isolated(result, {"web": "acme-unreachable"}, ["alpha"], secrets_of(database_url))
    proxy = FaultProxy(pebble, tmp_path, port=port)  # the CA is back, at the same address
    try:
        assert_converges(run_cli, desired)
    finally:
        proxy.close()
    assert proxy.order_names == ["web.fault.test"]
    record("ACME CA unreachable (closed port)", failed=["web"], done=["alpha"], converged=True)


def test_ca_answering_503_with_retry_after(
    pebble: Pebble, fault_proxy: FaultProxy, run_cli: Runner, tmp_path: Path, database_url: str
) -> None:
    """Reads of authorizations are retried after the CA's Retry-After; a newOrder is never sent twice."""
    fault_proxy.unavailable = {"authz": 2}
    fault_proxy.refused_names = {"bad.fault.test"}
    desired = write(
        tmp_path / "repo",
        doc(pebble, fault_proxy.directory_url, fault_proxy.ca_bundle, ["good", "bad"], ["alpha"]),
    )
    result = run_cli("apply", "--dir", str(desired), "--auto-approve")
    assert_isolated(result, {"bad": "acme-server-error"}, ["good", "alpha"], secrets_of(database_url))
    assert fault_proxy.answered_503 == {"authz": 2, "newOrder": 1}
    assert fault_proxy.order_names.count("bad.fault.test") == 1  # not retried: the journal resumes orders
    retried_reads = fault_proxy.requests["authz"]
    assert 3 <= retried_reads <= 6, fault_proxy.requests  # two refused, then read (bounded)

    fault_proxy.refused_names = set()  # the CA recovers
    assert_converges(run_cli, desired)
    assert fault_proxy.order_names.count("bad.fault.test") == 2  # one per apply
    record("CA answering 503 + Retry-After", failed=["bad"], done=["good", "alpha"], converged=True,
           answered_503=sum(fault_proxy.answered_503.values()))  # fmt: skip


class DnsRelay:
    """A TCP relay in front of BIND's update port: ``down`` hangs up on every connection (and counts them)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.down = True
        self.refused = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.down:
                self.refused += 1
                client.close()
                continue
            threading.Thread(target=self._pipe_both, args=(client,), daemon=True).start()

    def _pipe_both(self, client: socket.socket) -> None:
        with client, socket.create_connection(self.upstream, timeout=10) as server:
            threading.Thread(target=self._pipe, args=(server, client), daemon=True).start()
            self._pipe(client, server)

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._listener.close()


@pytest.fixture(scope="module")
def pebble_on_bind(tmp_path_factory: pytest.TempPathFactory, bind_server: BindServer) -> Iterator[Pebble]:
    with start_pebble(tmp_path_factory.mktemp("pebble-bind"), bind_server.host_port) as server:
        yield server


@pytest.fixture
def dns_relay(bind_server: BindServer) -> Iterator[DnsRelay]:
    relay = DnsRelay((bind_server.address, bind_server.port))
    try:
        yield relay
    finally:
        relay.close()


def test_dns_provider_down(
    pebble_on_bind: Pebble,
    bind_server: BindServer,
    dns_relay: DnsRelay,
    run_cli: Runner,
    cli_env: dict[str, str],
    tmp_path: Path,
    database_url: str,
) -> None:
    """The rfc2136 server hangs up: the dns-01 certificate fails after a bounded number of tries, the others go on."""
    content = dns01_doc(pebble_on_bind, bind_server, [
        {"name": "zoned", "domains": [f"zoned.{bind_server.zone}"], "issuer": "pebble", "challenge": "dns-01",
         "dns_provider": "corp-dns", "targets": ["deploy"]},
        {"name": "alpha", "domains": ["alpha.example.com"], "issuer": "internal", "targets": ["deploy"]},
    ])  # fmt: skip
    content["issuers"]["internal"] = {"local_ca": {"common_name": "Fault CA", "lifetime": "90d"}}
    content["dns_providers"]["corp-dns"]["rfc2136"].update(server=f"127.0.0.1:{dns_relay.port}", zone=bind_server.zone)
    desired = write(tmp_path / "repo", content)
    env = {**cli_env, "CORP_TSIG_SECRET": bind_server.tsig_secret}
    result = run_cli("apply", "--dir", str(desired), "--auto-approve", env=env)
    assert_isolated(result, {"zoned": "dns-server-unreachable"}, ["alpha"],
                    [bind_server.tsig_secret, *secrets_of(database_url)])  # fmt: skip
    assert dns_relay.refused == 3  # the update was tried three times (the provider's bound), then given up

    dns_relay.down = False  # the DNS server is back
    applied = run_cli("apply", "--dir", str(desired), "--auto-approve", env=env)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert run_cli("plan", "--dir", str(desired), "--detailed-exitcode", env=env).returncode == 0
    assert bind_server.txt_values(f"_acme-challenge.zoned.{bind_server.zone}") == set()  # cleaned up
    record("DNS provider down (rfc2136 server hangs up)", failed=["zoned"], done=["alpha"], converged=True,
           update_attempts=3)  # fmt: skip
