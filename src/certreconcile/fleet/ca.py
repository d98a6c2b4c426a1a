"""The fleet CA (design.md section 9): it signs the agents' certificates and the applier's identity.

Made on first need (EC P-256, ten years, path length 0); its key is sealed by the KMS in the
``FleetCa`` row, opened in memory only. An agent's certificate names the agent by the URI SAN
:func:`~certreconcile.fleet.protocol.agent_uri` decided here (whatever the CSR asks); the
applier's identity is an ephemeral key made in memory with a certificate of about an hour
(:mod:`certreconcile.fleet.identity`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certreconcile.actual.store import AgentCertificateRow, FleetCaRecord, StateStore, fleet_ca_context
from certreconcile.audit.events import AuditAction, AuditEvent
from certreconcile.crypto.envelope import open_envelope, seal
from certreconcile.crypto.keys import load_private_key, private_key_pem
from certreconcile.crypto.secret import Kms
from certreconcile.domain.certs import fingerprint_of_der
from certreconcile.errors import CertReconcileError, IssuerError
from certreconcile.fleet.protocol import DEFAULT_AGENT_CERT_LIFETIME, agent_uri

__all__ = [
    "FLEET_CA_AUDIT_NAME",
    "FLEET_CA_LIFETIME",
    "FLEET_CA_NAME",
    "FleetCa",
    "agent_row_of",
    "check_csr",
    "fleet_ca_missing",
    "leaf_certificate",
    "public_key_der",
]

FLEET_CA_NAME = "certreconcile fleet CA"
FLEET_CA_LIFETIME = timedelta(days=3650)
#: The ``name`` of the fleet CA's audit rows (agents' rows carry the agent's name).
FLEET_CA_AUDIT_NAME = "fleet-ca"
#: Certificates are back-dated this much to tolerate small clock skew between hosts.
BACKDATE = timedelta(minutes=1)
_MIN_RSA_BITS = 2048
_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)


def fleet_ca_missing() -> CertReconcileError:
    return CertReconcileError(
        "there is no fleet CA yet",
        code="fleet-ca-missing",
        hint="enrol a first agent with `certreconcile agent enroll NAME --csr FILE --out CERT` (it makes the CA)",
    )


def _key_usage(*, sign_certs: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, key_cert_sign=sign_certs, crl_sign=sign_certs, encipher_only=False, decipher_only=False,
    )  # fmt: skip


def public_key_der(key: object) -> bytes:
    """The SubjectPublicKeyInfo DER of a public key (to compare keys)."""
    assert isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey)
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def leaf_certificate(pem: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem.encode())
    except ValueError as exc:
        raise CertReconcileError("a certificate is not valid PEM", code="agent-response-invalid") from exc


def agent_row_of(name: str, cert: x509.Certificate) -> AgentCertificateRow:
    return AgentCertificateRow(
        name=name,
        serial=format(cert.serial_number, "x"),
        fingerprint=fingerprint_of_der(cert.public_bytes(serialization.Encoding.DER)),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )


def _csr_invalid(name: str, why: str) -> IssuerError:
    return IssuerError(
        f"the CSR for agent {name} {why}",
        code="agent-csr-invalid",
        hint="make the CSR on the agent's host from its own key (EC P-256/P-384, Ed25519 or RSA >= 2048)",
    )


def check_csr(name: str, csr_pem: str) -> x509.CertificateSigningRequest:
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError as exc:
        raise _csr_invalid(name, "is not a PEM certificate signing request") from exc
    if not csr.is_signature_valid:
        raise _csr_invalid(name, "has a bad signature (it was not signed by the key it carries)")
    key = csr.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < _MIN_RSA_BITS:
            raise _csr_invalid(name, f"carries a weak key (RSA {key.key_size} bits)")
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, _CURVES):
            raise _csr_invalid(name, f"carries a key on an unsupported curve ({key.curve.name})")
    elif not isinstance(key, ed25519.Ed25519PublicKey):
        raise _csr_invalid(name, f"carries an unsupported key type ({type(key).__name__})")
    return csr


@dataclass(frozen=True)
class FleetCa:
    """The fleet CA opened in memory: its certificate and private key (never written anywhere)."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_pem: str

    def __repr__(self) -> str:  # never the key
        return f"FleetCa(serial={self.cert.serial_number:x})"

    @staticmethod
    def open(store: StateStore, kms: Kms, now: datetime, actor: str, *, create: bool) -> FleetCa:
        """The stored fleet CA, opened with the KMS; made first when ``create`` and there is none.

        Raises ``fleet-ca-missing`` when there is none and not ``create``; the first writer wins a race.
        """
        with store.session() as session:
            record = session.fleet_ca()
            if record is None:
                if not create:
                    raise fleet_ca_missing()
                made = _create(kms, now)
                record = session.put_fleet_ca(made)
                if record.cert_pem == made.cert_pem:
                    cert = x509.load_pem_x509_certificate(made.cert_pem.encode())
                    session.append_audit(AuditEvent(
                        cert_id=None, name=FLEET_CA_AUDIT_NAME, action=AuditAction.FLEET_CA_CREATED, actor=actor,
                        at=now, detail={"serial": format(cert.serial_number, "x"),
                                        "not_after": cert.not_valid_after_utc.isoformat()},
                    ))  # fmt: skip
        key = load_private_key(open_envelope(kms, record.key_ref, fleet_ca_context()))
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CertReconcileError("the stored fleet CA key is not an EC key", code="fleet-ca-invalid")
        return FleetCa(x509.load_pem_x509_certificate(record.cert_pem.encode()), key, record.cert_pem)

    def _builder(self, subject: str, public_key: object, now: datetime, lifetime: timedelta) -> x509.CertificateBuilder:
        assert isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey)
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(min(now + lifetime, self.cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(sign_certs=False), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )

    def sign_agent_csr(
        self, name: str, csr_pem: str, now: datetime, lifetime: timedelta = DEFAULT_AGENT_CERT_LIFETIME
    ) -> x509.Certificate:
        """Agent ``name``'s certificate for the key of ``csr_pem``: the CSR's names are ignored."""
        csr = check_csr(name, csr_pem)
        builder = (
            self._builder(f"certreconcile agent {name}"[:64], csr.public_key(), now, lifetime)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(agent_uri(name))]),
                           critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
        )  # fmt: skip
        return builder.sign(self.key, hashes.SHA256())

    def sign_applier(self, public_key: ec.EllipticCurvePublicKey, uri: str, now: datetime, lifetime: timedelta) -> (
        x509.Certificate
    ):
        """The applier's client certificate (URI SAN ``uri``, clientAuth only)."""
        builder = (
            self._builder("certreconcile applier", public_key, now, lifetime)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        )
        return builder.sign(self.key, hashes.SHA256())


def _create(kms: Kms, now: datetime) -> FleetCaRecord:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, FLEET_CA_NAME)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + FLEET_CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(sign_certs=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_ref = seal(kms, private_key_pem(key), fleet_ca_context())
    return FleetCaRecord(cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode("ascii"), key_ref=key_ref)
