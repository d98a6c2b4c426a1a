"""The canary scanner (tests/canaries.py) finds a secret however it is embedded, and never the public parts."""

from __future__ import annotations

import base64
import datetime
import json
import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from canaries import Canary, CanaryScan, key_canary, secret_canary


def _pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, fmt: serialization.PrivateFormat) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def _certificate(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "canary.example.com")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256())
    )  # fmt: skip
    return cert.public_bytes(serialization.Encoding.PEM)


def _found(canary: Canary, data: bytes | str) -> list[str]:
    scan = CanaryScan([canary])
    scan.scan("test", "data", data)
    return [encoding for _, encoding, _ in scan.hits]


def _private_number(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> int:
    numbers = key.private_numbers()
    return numbers.private_value if isinstance(numbers, ec.EllipticCurvePrivateNumbers) else numbers.d


KEYS = [ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP384R1()),
        rsa.generate_private_key(public_exponent=65537, key_size=2048)]  # fmt: skip


@pytest.mark.parametrize("key", KEYS, ids=["p256", "p384", "rsa2048"])
def test_a_private_key_is_found_in_every_usual_disguise(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    pkcs8 = _pem(key, serialization.PrivateFormat.PKCS8)
    canary = key_canary("key", pkcs8)
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    disguises: dict[str, bytes | str] = {
        "PEM": b"log: " + pkcs8,
        "traditional PEM": _pem(key, serialization.PrivateFormat.TraditionalOpenSSL),
        "PEM in JSON": json.dumps({"private_key": pkcs8.decode()}),
        "repr of the bytes": repr(pkcs8),
        "DER in a binary file": os.urandom(7) + der + os.urandom(5),
        "hex of the DER": "key=" + der.hex(),
        "a private number in decimal": f"d={_private_number(key)}",  # what a careless f-string would print
    }
    for offset in range(3):
        blob = base64.b64encode(os.urandom(offset) + der + b"tail").decode()
        disguises[f"base64 of a blob, offset {offset}"] = f'{{"blob": "{blob}"}}'
        disguises[f"base64url of a blob, offset {offset}"] = base64.urlsafe_b64encode(os.urandom(offset) + der)
    for name, data in disguises.items():
        assert _found(canary, data), name


@pytest.mark.parametrize("key", KEYS, ids=["p256", "p384", "rsa2048"])
def test_the_public_parts_of_a_key_are_no_leak(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    canary = key_canary("key", _pem(key, serialization.PrivateFormat.PKCS8))
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    for _ in range(20):  # the certificate's alignment varies with its serial number and dates
        assert _found(canary, _certificate(key) + public) == []


def test_a_text_secret_is_found_raw_encoded_and_decoded() -> None:
    raw = os.urandom(32)
    hmac_key = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    canary = secret_canary("EAB HMAC", hmac_key)
    for data in (f"hmac={hmac_key}", f"key%3D{hmac_key}", raw.hex(), base64.b64encode(b"x" + raw).decode(),
                 json.dumps({"k": base64.b64encode(raw).decode()}), repr(raw)[2:40] and raw):  # fmt: skip
        assert _found(canary, data), data
    other = hmac_key[:20] + ("A" if hmac_key[20] != "A" else "B") + hmac_key[21:]
    assert _found(canary, "hmac=" + other) == []  # another secret, one character apart: no needle matches


def test_short_needles_are_dropped() -> None:
    with pytest.raises(AssertionError, match="no needle"):
        secret_canary("tiny", b"abc")
