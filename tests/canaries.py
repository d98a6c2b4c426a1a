"""Secret canaries: recognisable secrets in every encoding they could leak in, and a scanner.

A :class:`Canary` is one secret (a private key, a token, an HMAC key, a master key...) and its
*needles*: the byte strings that would betray it, each under an encoding name: the raw value,
hex (both cases), base64 and base64url at each of the three byte alignments (so the secret is
found inside a longer base64 text too), percent-encoding and, for private keys, every PEM body
line that carries private bits, the DER, and the private scalar(s) in raw, hex, base64 and decimal.
A needle never covers only public material (the public key is in every certificate), so a hit
is a leak, not a coincidence.

:class:`CanaryScan` counts what it checked (canaries x channels x encodings) and records every
hit as ``(canary, encoding, channel)``.
"""

from __future__ import annotations

import base64
import dataclasses
import urllib.parse
from collections.abc import Iterable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

__all__ = ["Canary", "CanaryScan", "key_canary", "secret_canary"]

MIN_NEEDLE = 12  # shorter needles could match by chance


def _int_bytes(value: int) -> bytes:
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def _base64_windows(value: bytes) -> dict[str, bytes]:
    """base64 / base64url of ``value`` at byte offsets 0, 1, 2 of a longer stream: only the characters
    made of ``value``'s bits alone, so the needle matches wherever the secret sits in an encoded text."""
    forms: dict[str, bytes] = {}
    for offset in range(3):
        padded = bytes(offset) + value
        first = -(-8 * offset // 6)
        last = (8 * len(padded)) // 6
        for name, encode in (("base64", base64.b64encode), ("base64url", base64.urlsafe_b64encode)):
            text = encode(padded)[first:last]
            forms[f"{name}@{offset}"] = text
    return forms


def _binary_forms(value: bytes) -> dict[str, bytes]:
    forms = {"raw": value, "hex": value.hex().encode(), "HEX": value.hex().upper().encode()}
    forms.update(_base64_windows(value))
    return forms


def _text_forms(text: str) -> dict[str, bytes]:
    forms = {f"text-{k}": v for k, v in _binary_forms(text.encode()).items()}
    forms["url-encoded"] = urllib.parse.quote(text, safe="").encode()
    forms["json-escaped"] = text.replace("/", "\\/").encode()
    decoded = _decode_base64(text)
    if decoded is not None and len(decoded) >= 12:
        forms.update({f"decoded-{k}": v for k, v in _binary_forms(decoded).items()})
    return forms


def _decode_base64(text: str) -> bytes | None:
    stripped = text.strip()
    padded = stripped + "=" * (-len(stripped) % 4)
    try:  # validate: without it, b64decode drops base64url's '-' and '_' and returns other bytes
        return base64.b64decode(padded, validate=True)
    except ValueError:
        pass
    try:
        return base64.urlsafe_b64decode(padded)
    except ValueError:
        return None


@dataclasses.dataclass(frozen=True)
class Canary:
    name: str
    needles: dict[str, bytes]  # encoding -> bytes that betray the secret

    def __post_init__(self) -> None:
        short = {k: v for k, v in self.needles.items() if len(v) < MIN_NEEDLE}
        for key in short:
            del self.needles[key]
        assert self.needles, f"canary {self.name} has no needle of {MIN_NEEDLE}+ bytes"


def secret_canary(name: str, value: str | bytes) -> Canary:
    """A token, password, HMAC or master key: as text (and decoded, when it is base64) or as bytes."""
    needles = _text_forms(value) if isinstance(value, str) else _binary_forms(value)
    return Canary(name, needles)


def _private_ranges(der: bytes, secrets_: Iterable[int]) -> list[tuple[int, int]]:
    ranges = []
    for number in secrets_:
        raw = _int_bytes(number)
        start = der.find(raw)
        assert start >= 0, "a private component was not found in the DER"
        ranges.append((start, start + len(raw)))
    return ranges


def _private_lines(der: bytes, private: list[int], label: str) -> dict[str, bytes]:
    """The 64-character PEM body lines of ``der`` that carry private bits (the others are public)."""
    ranges = _private_ranges(der, private)
    body = base64.b64encode(der)
    lines = {}
    for index in range(0, len(body), 64):
        start, end = index // 4 * 3, min(len(der), (index + 64) // 4 * 3)
        if any(start < high and low < end for low, high in ranges):
            lines[f"{label}-pem-line-{index // 64}"] = body[index : index + 64]
    return lines


def key_canary(name: str, pem: bytes) -> Canary:
    """A private key: the PEM lines with private bits of its PKCS#8 and traditional (SEC1, PKCS#1) forms,
    both DERs, its private scalars in raw, hex, base64 and decimal."""
    key = serialization.load_pem_private_key(pem, password=None)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        private = [key.private_numbers().private_value]
    elif isinstance(key, rsa.RSAPrivateKey):
        numbers = key.private_numbers()
        private = [numbers.d, numbers.p, numbers.q, numbers.dmp1, numbers.dmq1, numbers.iqmp]
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        private = [int.from_bytes(key.private_bytes_raw(), "big")]
    else:  # pragma: no cover - no other key type is generated
        raise TypeError(f"unexpected key type {type(key).__name__}")
    needles: dict[str, bytes] = {}
    formats = {"pkcs8": serialization.PrivateFormat.PKCS8}
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        formats["traditional"] = serialization.PrivateFormat.TraditionalOpenSSL
    for label, private_format in formats.items():
        der = key.private_bytes(serialization.Encoding.DER, private_format, serialization.NoEncryption())
        needles.update(_private_lines(der, private, label))
        needles.update({f"{label}-der-{k}": v for k, v in _binary_forms(der).items()})
    for number_index, number in enumerate(private):
        needles.update({f"scalar{number_index}-{k}": v for k, v in _binary_forms(_int_bytes(number)).items()})
        needles[f"scalar{number_index}-decimal"] = str(number).encode()
    return Canary(name, needles)


@dataclasses.dataclass
class CanaryScan:
    canaries: list[Canary]
    hits: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)  # canary, encoding, channel
    checks: int = 0  # needle x channel-item comparisons
    items: dict[str, int] = dataclasses.field(default_factory=dict)  # channel kind -> items scanned
    sizes: dict[str, int] = dataclasses.field(default_factory=dict)  # channel kind -> bytes scanned

    def add(self, canary: Canary) -> bool:
        """Seed ``canary`` unless the same secret is seeded already (a key stored twice); True if added."""
        if any(canary.needles == known.needles for known in self.canaries):
            return False
        self.canaries.append(canary)
        return True

    def scan(self, kind: str, where: str, data: bytes | str) -> None:
        """Look for every needle of every canary in ``data``, an item of channel ``kind``."""
        blob = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
        self.items[kind] = self.items.get(kind, 0) + 1
        self.sizes[kind] = self.sizes.get(kind, 0) + len(blob)
        for canary in self.canaries:
            for encoding, needle in canary.needles.items():
                self.checks += 1
                if needle in blob:
                    self.hits.append((canary.name, encoding, f"{kind}: {where}"))

    def scan_file(self, kind: str, path: Path) -> None:
        self.scan(kind, str(path), path.read_bytes())

    @property
    def needle_count(self) -> int:
        return sum(len(canary.needles) for canary in self.canaries)

    def summary(self) -> str:
        channels = ", ".join(f"{kind} ({count}, {self.sizes[kind]} B)" for kind, count in sorted(self.items.items()))
        return (
            f"{len(self.canaries)} secrets, {self.needle_count} encodings, {len(self.items)} channel kinds "
            f"[{channels}], {self.checks} checks over {sum(self.sizes.values())} bytes, found {len(self.hits)}"
        )
