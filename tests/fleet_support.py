"""A test fleet: a fleet CA, client certificates, agent directories and real agent processes.

Loaded as a plugin by ``tests/conftest.py`` (the ``test_fleet`` fixture, once per session); the
helpers are imported as ``from fleet_support import ...``:

* :func:`make_test_fleet`: a fleet CA (``cryptography``), the applier's client certificate (URI SAN
  ``spiffe://certreconcile/applier``), one with that SAN from ANOTHER CA, one from the fleet CA without it;
* :func:`write_agent_dir`: an agent's directory: ``agent.yaml``, its key (0600, made here), its certificate
  (URI SAN of its name, signed by the fleet CA) and the CA file;
* :func:`run_agent`: ``python -m certreconcile agent --config ...`` as a SEPARATE PROCESS, in an environment
  without any database or KMS setting (:func:`agent_env`), on a free 127.0.0.1 port; returns once it
  answers ``hello``; stopped (SIGTERM, then SIGKILL) when the block ends;
* :class:`AgentClient`: a small standard-library HTTPS client that sends any body with any client certificate
  and checks the agent's URI SAN; :func:`request` makes a fresh request (timestamp now, new nonce).
"""

from __future__ import annotations

import contextlib
import datetime
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certreconcile.agent.environment import FORBIDDEN_VARIABLES
from certreconcile.fleet.protocol import (
    APPLIER_URI,
    HelloRequest,
    RequestBase,
    agent_uri,
    encode_request,
    new_nonce,
    path_for,
)
from kms_servers import free_port

__all__ = [
    "AgentClient",
    "AgentDir",
    "AgentProcess",
    "ClientCert",
    "Pki",
    "Response",
    "TestFleet",
    "agent_env",
    "make_ca",
    "make_test_fleet",
    "request",
    "run_agent",
    "test_fleet",
    "write_agent_dir",
]

_SRC = Path(__file__).resolve().parents[1] / "src"
_Request = TypeVar("_Request", bound=RequestBase)


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass(frozen=True)
class Pki:
    """A CA: its certificate and key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> str:
        return _pem(self.cert)

    def issue(
        self,
        common_name: str,
        public_key: Any,
        *,
        uris: Sequence[str] = (),
        lifetime: datetime.timedelta = datetime.timedelta(days=30),
        not_before: datetime.datetime | None = None,
    ) -> str:
        """A leaf certificate (PEM) for ``public_key``, with ``uris`` as URI SANs."""
        start = not_before or _utcnow() - datetime.timedelta(minutes=5)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + lifetime)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if uris:
            names = [x509.UniformResourceIdentifier(uri) for uri in uris]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return _pem(builder.sign(self.key, hashes.SHA256()))

    def sign_csr(self, csr_pem: str, **options: Any) -> str:
        """A certificate for the CSR's key and its URI SANs (what `agent enroll` does on the applier side)."""
        csr = x509.load_pem_x509_csr(csr_pem.encode())
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        common_name = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        return self.issue(str(common_name), csr.public_key(), uris=uris, **options)


def make_ca(name: str) -> Pki:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _utcnow()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return Pki(cert, key)


@dataclass(frozen=True)
class ClientCert:
    cert_file: Path
    key_file: Path


def _write_client(directory: Path, label: str, ca: Pki, uris: Sequence[str]) -> ClientCert:
    key = ec.generate_private_key(ec.SECP256R1())
    cert_file, key_file = directory / f"{label}.crt", directory / f"{label}.key"
    cert_file.write_text(ca.issue(label, key.public_key(), uris=uris))
    key_file.write_bytes(_key_pem(key))
    key_file.chmod(0o600)
    return ClientCert(cert_file, key_file)


@dataclass(frozen=True)
class TestFleet:
    __test__ = False  # not a test class

    directory: Path
    ca: Pki
    other_ca: Pki
    ca_file: Path  # the fleet CA certificate (PEM)
    applier: ClientCert  # fleet CA, URI SAN spiffe://certreconcile/applier
    applier_other_ca: ClientCert  # the applier's SAN, from another CA
    without_san: ClientCert  # fleet CA, an agent's URI SAN instead of the applier's


def make_test_fleet(directory: Path) -> TestFleet:
    directory.mkdir(parents=True, exist_ok=True)
    ca, other_ca = make_ca("certreconcile test fleet CA"), make_ca("another CA")
    ca_file = directory / "fleet-ca.crt"
    ca_file.write_text(ca.pem)
    return TestFleet(
        directory=directory,
        ca=ca,
        other_ca=other_ca,
        ca_file=ca_file,
        applier=_write_client(directory, "applier", ca, [APPLIER_URI]),
        applier_other_ca=_write_client(directory, "applier-other-ca", other_ca, [APPLIER_URI]),
        without_san=_write_client(directory, "no-applier-san", ca, [agent_uri("intruder")]),
    )


@pytest.fixture(scope="session")
def test_fleet(tmp_path_factory: pytest.TempPathFactory) -> TestFleet:
    return make_test_fleet(tmp_path_factory.mktemp("fleet"))


@dataclass(frozen=True)
class AgentDir:
    name: str
    directory: Path
    config: Path
    key_file: Path
    cert_file: Path
    ca_file: Path
    host: str
    port: int


def write_agent_dir(
    directory: Path,
    fleet: TestFleet,
    name: str,
    targets: Mapping[str, Any],
    *,
    extra: Mapping[str, Any] | None = None,
    enrol: bool = True,
) -> AgentDir:
    """An agent's directory; ``enrol=False`` leaves out the key and certificate (for ``agent csr``)."""
    tls = directory / "tls"
    tls.mkdir(parents=True, exist_ok=True)
    (tls / "fleet-ca.crt").write_text(fleet.ca.pem)
    port = free_port()
    document: dict[str, Any] = {
        "name": name,
        "listen": f"127.0.0.1:{port}",
        "tls": {"key_file": "tls/agent.key", "cert_file": "tls/agent.crt", "ca_file": "tls/fleet-ca.crt"},
        "targets": dict(targets),
        **(extra or {}),
    }
    config = directory / "agent.yaml"
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    agent = AgentDir(
        name, directory, config, tls / "agent.key", tls / "agent.crt", tls / "fleet-ca.crt", "127.0.0.1", port
    )
    if enrol:
        key = ec.generate_private_key(ec.SECP256R1())
        agent.key_file.write_bytes(_key_pem(key))
        agent.key_file.chmod(0o600)
        agent.cert_file.write_text(fleet.ca.issue(name, key.public_key(), uris=[agent_uri(name)]))
    return agent


def agent_env(extra: Mapping[str, str] | None = None, *, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) without a single database or KMS setting, plus ``extra``."""
    source = os.environ if base is None else base
    env = {key: value for key, value in source.items() if key not in FORBIDDEN_VARIABLES}
    env.pop("CERTRECONCILE_TEST_DATABASE_URL", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_SRC), os.environ.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def agent_command(config: Path, *arguments: str) -> list[str]:
    return [sys.executable, "-m", "certreconcile", "agent", *arguments, "--config", str(config)]


@dataclass(frozen=True)
class Response:
    status: int
    data: dict[str, Any]
    peer_uris: tuple[str, ...] = ()
    peer_cert_der: bytes = field(default=b"", repr=False)

    @property
    def code(self) -> str | None:
        error = self.data.get("error")
        return error.get("code") if isinstance(error, dict) else None


@dataclass
class AgentClient:
    """HTTPS with a client certificate; the agent's certificate must chain to ``ca_file``."""

    host: str
    port: int
    ca_file: Path
    client: ClientCert
    agent_name: str | None = None  # set: the agent's certificate must carry agent_uri(agent_name)
    timeout: float = 60.0
    _context: ssl.SSLContext = field(init=False)

    def __post_init__(self) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False  # an agent's certificate names it by URI SAN, checked below
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=self.ca_file)
        context.load_cert_chain(self.client.cert_file, self.client.key_file)
        self._context = context

    def post(self, operation: str, body: bytes, *, method: str = "POST", path: str | None = None,
             headers: Mapping[str, str] | None = None) -> Response:  # fmt: skip
        connection = http.client.HTTPSConnection(self.host, self.port, context=self._context, timeout=self.timeout)
        try:
            connection.request(method, path or path_for(operation), body=body, headers={
                "Content-Type": "application/json", **(headers or {})})  # fmt: skip
            sock = connection.sock  # before the response: "Connection: close" drops it once read
            assert isinstance(sock, ssl.SSLSocket)
            peer = sock.getpeercert() or {}
            der = sock.getpeercert(binary_form=True) or b""
            answer = connection.getresponse()
            data = answer.read()
        finally:
            connection.close()
        uris = tuple(value for kind, value in peer.get("subjectAltName", ()) if kind == "URI")
        if self.agent_name is not None and agent_uri(self.agent_name) not in uris:
            raise AssertionError(f"the agent at {self.host}:{self.port} is not {agent_uri(self.agent_name)}: {uris}")
        return Response(answer.status, json.loads(data) if data else {}, uris, der)

    def call(self, message: RequestBase) -> Response:
        operation = next(op for op, (model, _) in _operations().items() if isinstance(message, model))
        return self.post(operation, encode_request(message))


def _operations() -> dict[str, tuple[type[RequestBase], Any]]:
    from certreconcile.fleet.protocol import OPERATIONS

    return OPERATIONS


def request(model: type[_Request], *, at: datetime.datetime | None = None, **fields: Any) -> _Request:
    """A request made now (or ``at``) with a fresh nonce."""
    return model(timestamp=at or _utcnow(), nonce=new_nonce(), **fields)


@dataclass
class AgentProcess:
    agent: AgentDir
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        """What the central ``agents:`` section declares for this agent."""
        return f"https://{self.agent.host}:{self.agent.port}"

    def client(self, fleet: TestFleet, client: ClientCert | None = None) -> AgentClient:
        return AgentClient(self.agent.host, self.agent.port, fleet.ca_file, client or fleet.applier, self.agent.name)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode


def _wait_ready(started: AgentProcess, fleet: TestFleet, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    client = started.client(fleet)
    while time.monotonic() < deadline:
        if started.process.poll() is not None:
            pytest.fail(f"the agent exited with {started.process.returncode}: {started.log_text()[-2000:]}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if client.call(request(HelloRequest)).status == 200:
                return
        time.sleep(0.05)
    pytest.fail(f"the agent did not answer hello within {timeout:.0f}s: {started.log_text()[-2000:]}")


@contextlib.contextmanager
def run_agent(agent: AgentDir, fleet: TestFleet, env: Mapping[str, str] | None = None) -> Iterator[AgentProcess]:
    """The agent of ``agent`` as a separate process, answering ``hello``, until the block ends."""
    log = agent.directory / "agent.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            agent_command(agent.config),
            env=dict(env) if env is not None else agent_env(),
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=agent.directory,
        )
    started = AgentProcess(agent, process, log)
    try:
        _wait_ready(started, fleet)
        yield started
    finally:
        started.stop()
