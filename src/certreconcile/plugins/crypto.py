"""Key pairs and CSRs. Private keys leave this module only as :class:`SecretBytes`."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

from certreconcile.domain.keys import KeyType
from certreconcile.plugins.ports import SecretBytes

__all__ = [
    "PrivateKey",
    "build_csr",
    "generate_private_key",
    "load_private_key",
    "private_key_pem",
    "public_key_matches",
]

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


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


def build_csr(key: CertificateIssuerPrivateKeyTypes, domains: tuple[str, ...]) -> str:
    builder = x509.CertificateSigningRequestBuilder()
    if len(domains[0]) <= 64:
        builder = builder.subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domains[0])]))
    builder = builder.add_extension(
        x509.SubjectAlternativeName([x509.DNSName(name) for name in domains]), critical=False
    )
    csr = builder.sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def public_key_matches(cert_pem: str, key: PrivateKey) -> bool:
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)
