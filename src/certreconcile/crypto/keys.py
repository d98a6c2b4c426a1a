"""Key pairs and CSRs. Private keys leave this module only as :class:`SecretBytes`."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

from certreconcile.crypto.secret import SecretBytes
from certreconcile.domain.keys import KeyType

__all__ = [
    "MAX_COMMON_NAME",
    "PrivateKey",
    "build_csr",
    "common_name_for",
    "generate_private_key",
    "load_private_key",
    "private_key_pem",
    "public_key_matches",
]

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
#: ub-common-name (RFC 5280): a subject CN holds at most 64 characters; a DNS name up to 253.
MAX_COMMON_NAME = 64


def generate_private_key(key_type: KeyType) -> PrivateKey:
    match key_type:
        case KeyType.ECDSA_P256:
            return ec.generate_private_key(ec.SECP256R1())
        case KeyType.ECDSA_P384:
            return ec.generate_private_key(ec.SECP384R1())
        case KeyType.RSA_2048 | KeyType.RSA_3072 | KeyType.RSA_4096:
            return rsa.generate_private_key(public_exponent=65537, key_size=key_type.rsa_bits)


def private_key_pem(key: PrivateKey) -> SecretBytes:
    return SecretBytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def load_private_key(pem: SecretBytes) -> PrivateKey:
    key = serialization.load_pem_private_key(pem.reveal(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise TypeError("only ECDSA and RSA private keys are supported")
    return key


def common_name_for(domains: tuple[str, ...]) -> str | None:
    """The subject CN: the first name that fits in 64 characters, else none (the SANs carry every
    name; Let's Encrypt does the same)."""
    return next((name for name in domains if len(name) <= MAX_COMMON_NAME), None)


def build_csr(key: CertificateIssuerPrivateKeyTypes, domains: tuple[str, ...]) -> str:
    common_name = common_name_for(domains)
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name is not None else []
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(subject))
    builder = builder.add_extension(
        x509.SubjectAlternativeName([x509.DNSName(name) for name in domains]), critical=False
    )
    csr = builder.sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def public_key_matches(cert_pem: str, key: PrivateKey) -> bool:
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)
