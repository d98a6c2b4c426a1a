"""The serial format the vault_pki issuer sends to ``<mount>/revoke`` (the rest runs against OpenBao)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from certreconcile.crypto.keys import generate_private_key
from certreconcile.domain.keys import KeyType
from certreconcile.plugins.issuers.vault_pki import vault_serial_number


@pytest.mark.parametrize(
    ("serial", "expected"),
    [(0x0A0B, "0a:0b"), (0xFF, "ff"), (0x7A697CF81D6AF257, "7a:69:7c:f8:1d:6a:f2:57"), (1, "01")],
    ids=["leading-zero-nibble", "one-byte", "eight-bytes", "one"],
)
def test_vault_serial_number(serial: int, expected: str) -> None:
    key = generate_private_key(KeyType.ECDSA_P256)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "serial.test")])
    now = datetime(2026, 1, 1, tzinfo=UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    assert vault_serial_number(cert) == expected
