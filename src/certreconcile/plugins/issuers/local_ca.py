"""The local CA issuer: a private CA whose key is created on first use and sealed by the KMS.

For internal names, demos and tests. The CA certificate and its encrypted key live in the
``LocalCa`` table, one per issuer name; the first process to create it wins, the others
use the stored one. It signs CSRs for exactly the declared names with the declared lifetime.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certreconcile.actual.store import LocalCaRecord, LocalCaStore, SessionSource
from certreconcile.crypto.envelope import open_envelope, seal
from certreconcile.crypto.keys import (
    PrivateKey,
    common_name_for,
    generate_private_key,
    load_private_key,
    private_key_pem,
)
from certreconcile.domain.keys import KeyType
from certreconcile.errors import IssuerError
from certreconcile.plugins.issuers.local_ca_config import LocalCaConfig
from certreconcile.plugins.ports import EncryptionContext, IssuedCertificate, IssueRequest, Kms

__all__ = ["LocalCaIssuer", "ca_key_context"]

#: Certificates are back-dated this much to tolerate small clock skew on clients.
BACKDATE = timedelta(minutes=1)


def ca_key_context(issuer_name: str) -> EncryptionContext:
    """The context binding a local CA's key to its LocalCa row (also used by ``kms rewrap``)."""
    return _ca_context(issuer_name)


def _ca_context(issuer_name: str) -> EncryptionContext:
    return EncryptionContext(table="LocalCa", row_id=issuer_name, purpose="ca-key")


class LocalCaIssuer:
    def __init__(self, name: str, config: LocalCaConfig, store: SessionSource[LocalCaStore], kms: Kms) -> None:
        self.name = name
        self._config = config
        self._store = store
        self._kms = kms
        self._lifetime = config.lifetime.delta
        self._ca_lifetime = config.ca_lifetime.delta
        self._ca: tuple[x509.Certificate, PrivateKey, str] | None = None
        self._lock = threading.Lock()

    def supported_key_types(self) -> frozenset[KeyType]:
        return frozenset(KeyType)

    @property
    def lifetime(self) -> timedelta:
        return self._lifetime

    def ca_certificate_pem(self, now: datetime) -> str:
        return self._load_or_create(now)[2]

    def _load_or_create(self, now: datetime) -> tuple[x509.Certificate, PrivateKey, str]:
        with self._lock:
            if self._ca is None:
                with self._store.session() as session:
                    record = session.get_local_ca(self.name)
                    if record is None:
                        record = session.put_local_ca(self._create(now))
                key = load_private_key(open_envelope(self._kms, record.key_ref, _ca_context(self.name)))
                cert = x509.load_pem_x509_certificate(record.cert_pem.encode())
                self._ca = (cert, key, record.cert_pem)
            return self._ca

    def _create(self, now: datetime) -> LocalCaRecord:
        key = generate_private_key(KeyType.ECDSA_P384)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self._config.common_name)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + self._ca_lifetime)
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
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA384())
        )
        key_ref = seal(self._kms, private_key_pem(key), _ca_context(self.name))
        cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
        return LocalCaRecord(name=self.name, cert_pem=cert_pem, key_ref=key_ref)

    def issue(self, request: IssueRequest) -> IssuedCertificate:
        ca_cert, ca_key, ca_pem = self._load_or_create(request.now)
        try:
            csr = x509.load_pem_x509_csr(request.csr_pem.encode())
        except ValueError as exc:
            raise IssuerError("the certificate signing request is malformed", code="csr-invalid") from exc
        if not csr.is_signature_valid:
            raise IssuerError("the certificate signing request has a bad signature", code="csr-invalid")
        not_before = request.now - BACKDATE
        not_after = min(request.now + self._lifetime, ca_cert.not_valid_after_utc)
        builder = (
            x509.CertificateBuilder()
            .issuer_name(ca_cert.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(name) for name in request.domains]), critical=False
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        common_name = common_name_for(request.domains)
        subject = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name is not None else []
        builder = builder.subject_name(x509.Name(subject))
        cert = builder.sign(ca_key, hashes.SHA384())
        return IssuedCertificate(
            cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode("ascii"), chain_pem=ca_pem
        )

    def revoke(self, cert_pem: str, reason: str) -> None:
        """The local CA publishes no CRL or OCSP: revocation is recorded in the state and audit only."""
        x509.load_pem_x509_certificate(cert_pem.encode())
