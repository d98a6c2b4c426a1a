"""Key specifications and key references.

A :class:`KeyRef` is a *handle* to an encrypted private key (the KMS envelope,
serialised as JSON). It never holds key bytes in plaintext, and its ``repr`` shows
only the KMS and key id.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["KeyRef", "KeyType"]


class KeyType(enum.StrEnum):
    ECDSA_P256 = "ecdsa-p256"
    ECDSA_P384 = "ecdsa-p384"
    RSA_2048 = "rsa-2048"
    RSA_3072 = "rsa-3072"
    RSA_4096 = "rsa-4096"

    @property
    def is_rsa(self) -> bool:
        return self.value.startswith("rsa-")

    @property
    def rsa_bits(self) -> int:
        if not self.is_rsa:
            raise ValueError(f"{self.value} is not an RSA key type")
        return int(self.value.removeprefix("rsa-"))


@dataclass(frozen=True, slots=True)
class KeyRef:
    """The serialised KMS envelope of one private key (ciphertext only)."""

    envelope_json: str
    kms: str
    key_id: str

    def __repr__(self) -> str:
        return f"KeyRef(kms={self.kms!r}, key_id={self.key_id!r})"

    __str__ = __repr__
