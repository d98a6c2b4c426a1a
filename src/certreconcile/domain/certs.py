"""Facts read from a certificate's PEM: what the planner and the status table need."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization

__all__ = ["CertFacts", "fingerprint_of_der", "read_cert_facts", "split_pem_chain"]


@dataclass(frozen=True, slots=True)
class CertFacts:
    serial_number: str  # lower-case hex, no separators
    not_before: datetime
    not_after: datetime
    fingerprint: str  # SHA-256 of the DER, lower-case hex
    domains: tuple[str, ...]  # DNS SANs in certificate order
    issuer: str  # RFC 4514 issuer DN

    @property
    def lifetime_seconds(self) -> float:
        return (self.not_after - self.not_before).total_seconds()


def fingerprint_of_der(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def split_pem_chain(pem: str) -> list[str]:
    """Split concatenated PEM certificates, keeping each block's armour."""
    marker = "-----END CERTIFICATE-----"
    blocks = []
    for part in pem.split(marker):
        start = part.find("-----BEGIN CERTIFICATE-----")
        if start != -1:
            blocks.append(part[start:] + marker + "\n")
    return blocks


def read_cert_facts(pem: str | bytes) -> CertFacts:
    data = pem.encode() if isinstance(pem, str) else pem
    cert = x509.load_pem_x509_certificate(data)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        domains = tuple(san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        domains = ()
    der = cert.public_bytes(serialization.Encoding.DER)
    return CertFacts(
        serial_number=format(cert.serial_number, "x"),
        not_before=cert.not_valid_before_utc.astimezone(UTC),
        not_after=cert.not_valid_after_utc.astimezone(UTC),
        fingerprint=fingerprint_of_der(der),
        domains=domains,
        issuer=cert.issuer.rfc4514_string(),
    )
