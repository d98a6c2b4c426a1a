"""The agent's own identity: its key (made here, never moved), its certificate, the fleet CA, the TLS context.

* :func:`ensure_key` makes the EC P-256 key once (0600, ``O_EXCL``); afterwards it is only read.
* :func:`agent_csr` signs a CSR with that key: subject ``CN=<name>``, URI SAN ``spiffe://certreconcile/agent/<name>``.
* :func:`check_renewed_certificate` accepts a certificate only for that key and name, issued by a CA of
  ``ca_file``, valid now; :func:`install_certificate` replaces ``cert_file`` atomically (the key file is
  never opened for writing).
* :class:`ContextHolder` keeps the server's current :class:`ssl.SSLContext`: each accepted connection is
  wrapped with the one current then, so a renewed certificate serves new connections without a restart.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import stat
import threading
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certreconcile.agent.config import AgentTls
from certreconcile.crypto.keys import PrivateKey, load_private_key, private_key_pem
from certreconcile.crypto.secret import SecretBytes
from certreconcile.domain.certs import CertFacts, read_cert_facts
from certreconcile.errors import ConfigError
from certreconcile.fleet.protocol import agent_uri

__all__ = [
    "AgentRefusedCertificate",
    "ContextHolder",
    "agent_csr",
    "build_server_context",
    "check_own_certificate",
    "check_renewed_certificate",
    "ensure_key",
    "install_certificate",
    "load_agent_key",
    "uri_sans",
]


class AgentRefusedCertificate(ValueError):
    """A renewed certificate the agent will not install; ``code`` is a registered error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def uri_sans(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(san.value.get_values_for_type(x509.UniformResourceIdentifier))


def _tls_error(message: str, hint: str) -> ConfigError:
    return ConfigError(message, code="agent-tls-invalid", hint=hint)


def load_agent_key(key_file: Path) -> PrivateKey:
    """The agent's private key; refused when others may read it or it cannot be parsed."""
    try:
        info = key_file.stat()
        data = key_file.read_bytes()
    except OSError as exc:
        raise _tls_error(
            f"cannot read the agent key {key_file}: {exc.strerror}",
            "make it with `certreconcile agent csr --config FILE` on this host",
        ) from exc
    if info.st_mode & 0o077:
        raise _tls_error(
            f"the agent key {key_file} has mode {stat.S_IMODE(info.st_mode):04o}: others may read it",
            f"chmod 600 {key_file}",
        )
    try:
        return load_private_key(SecretBytes(data))
    except (ValueError, TypeError) as exc:
        raise _tls_error(f"{key_file} holds no usable private key", "point key_file at the agent's key") from exc


def ensure_key(key_file: Path) -> tuple[PrivateKey, bool]:
    """The agent's key, made now (EC P-256, 0600) when ``key_file`` does not exist; (key, made?)."""
    if key_file.exists() or key_file.is_symlink():
        return load_agent_key(key_file), False
    key = ec.generate_private_key(ec.SECP256R1())
    key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        descriptor = os.open(key_file, flags, 0o600)
    except OSError as exc:
        raise _tls_error(f"cannot create the agent key {key_file}: {exc.strerror}", "check the directory") from exc
    with os.fdopen(descriptor, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(private_key_pem(key).reveal())
        handle.flush()
        os.fsync(handle.fileno())
    return key, True


def agent_csr(key: PrivateKey, name: str) -> str:
    """A CSR for agent ``name`` signed by ``key``: ``CN=<name>``, URI SAN :func:`agent_uri`."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    )
    builder = builder.add_extension(
        x509.SubjectAlternativeName([x509.UniformResourceIdentifier(agent_uri(name))]), critical=False
    )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode("ascii")


def _spki(public_key: object) -> bytes:
    assert hasattr(public_key, "public_bytes")
    data: bytes = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return data


def _load_cas(ca_file: Path) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(ca_file.read_bytes())
    except (OSError, ValueError) as exc:
        raise _tls_error(f"cannot read the fleet CA {ca_file}", "point ca_file at the fleet CA certificate") from exc


def _issued_by_one_of(cert: x509.Certificate, authorities: list[x509.Certificate]) -> bool:
    for authority in authorities:
        with contextlib.suppress(ValueError, TypeError, InvalidSignature):
            cert.verify_directly_issued_by(authority)
            return True
    return False


def check_renewed_certificate(cert_pem: str, ca_pem: str, *, tls: AgentTls, name: str, now: datetime) -> CertFacts:
    """The facts of a renewed certificate the agent may install; :class:`AgentRefusedCertificate` otherwise."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
        sent_cas = x509.load_pem_x509_certificates(ca_pem.encode())
    except ValueError as exc:
        raise AgentRefusedCertificate("agent-request-invalid", "cert_pem or ca_pem is not a PEM certificate") from exc
    key = load_agent_key(tls.key_file)
    if _spki(cert.public_key()) != _spki(key.public_key()):
        raise AgentRefusedCertificate("agent-name-mismatch", "the certificate is not for this agent's key")
    if agent_uri(name) not in uri_sans(cert):
        raise AgentRefusedCertificate("agent-name-mismatch", f"the certificate does not carry {agent_uri(name)}")
    authorities = _load_cas(tls.ca_file)
    known = {authority.fingerprint(hashes.SHA256()) for authority in authorities}
    if any(sent.fingerprint(hashes.SHA256()) not in known for sent in sent_cas):
        raise AgentRefusedCertificate("agent-certificate-refused", "ca_pem is not the agent's fleet CA (ca_file)")
    if not _issued_by_one_of(cert, authorities):
        raise AgentRefusedCertificate("agent-certificate-refused", "the certificate is not signed by the fleet CA")
    facts = read_cert_facts(cert_pem)
    if not facts.not_before <= now < facts.not_after:
        raise AgentRefusedCertificate("agent-certificate-refused", "the certificate is not valid now")
    return facts


def install_certificate(tls: AgentTls, cert_pem: str) -> ssl.SSLContext:
    """Replace ``cert_file`` atomically and return the server context serving it.

    The new file (0644) is written beside it and fsync'd, a context is built from it with the
    unchanged key (so a certificate the TLS library refuses never replaces the good one), then it is
    renamed over ``cert_file``. The key file is only read.
    """
    cert_file = tls.cert_file
    folder = cert_file.parent
    temporary = folder / f".{cert_file.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    descriptor = os.open(temporary, flags, 0o644)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            os.fchmod(handle.fileno(), 0o644)
            handle.write(cert_pem.encode())
            handle.flush()
            os.fsync(handle.fileno())
        context = build_server_context(AgentTls(tls.key_file, temporary, tls.ca_file))
        os.replace(temporary, cert_file)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder_fd)
    finally:
        os.close(folder_fd)
    return context


def build_server_context(tls: AgentTls) -> ssl.SSLContext:
    """The server side of mutual TLS: this agent's certificate, TLS >= 1.2, clients must chain to the fleet CA."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise _tls_error(
            f"cannot load the agent certificate {tls.cert_file} with its key {tls.key_file}",
            "enrol the agent (`certreconcile agent enroll` on the applier side); the files must belong together",
        ) from exc
    try:
        context.load_verify_locations(cafile=tls.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise _tls_error(f"cannot load the fleet CA {tls.ca_file}", "point ca_file at the fleet CA") from exc
    return context


class ContextHolder:
    """The server's current SSL context and the facts of its certificate; swapped atomically on renewal."""

    def __init__(self, context: ssl.SSLContext, facts: CertFacts) -> None:
        self._lock = threading.Lock()
        self._context = context
        self._facts = facts

    def current(self) -> tuple[ssl.SSLContext, CertFacts]:
        with self._lock:
            return self._context, self._facts

    def replace(self, context: ssl.SSLContext, facts: CertFacts) -> None:
        with self._lock:
            self._context, self._facts = context, facts


def check_own_certificate(tls: AgentTls, name: str) -> CertFacts:
    """The agent's certificate at start: readable, for its key, carrying its name's URI SAN."""
    try:
        cert_pem = tls.cert_file.read_text()
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
    except (OSError, ValueError) as exc:
        raise _tls_error(
            f"cannot read the agent certificate {tls.cert_file}",
            "enrol the agent: `certreconcile agent csr` here, `certreconcile agent enroll` on the applier side",
        ) from exc
    key = load_agent_key(tls.key_file)
    if _spki(cert.public_key()) != _spki(key.public_key()):
        raise _tls_error(f"{tls.cert_file} is not the certificate of the key {tls.key_file}", "enrol the agent again")
    if agent_uri(name) not in uri_sans(cert):
        raise ConfigError(
            f"{tls.cert_file} does not carry {agent_uri(name)}: it is not the certificate of agent {name!r}",
            code="agent-name-mismatch",
            hint="`name` in the configuration must be the name the agent was enrolled with",
        )
    return read_cert_facts(cert_pem)
