"""Key material in memory and the KMS port: the types the envelope and every KMS plug-in share.

They live here, below ``plugins``, so the engine reaches the envelope without going through
``plugins/``; :mod:`certreconcile.plugins.ports` re-exports them for plug-in authors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["EncryptionContext", "Kms", "SecretBytes", "WrappedKey"]


class SecretBytes:
    """Plaintext key material in memory. Its repr and str never show the bytes."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = value

    def reveal(self) -> bytes:
        return self._value

    def __repr__(self) -> str:
        return "SecretBytes(<redacted>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretBytes) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class EncryptionContext:
    """Binds a ciphertext to its row: table, row id, key version, purpose."""

    table: str
    row_id: str
    key_version: int = 1
    purpose: str = "private-key"

    def as_mapping(self) -> dict[str, str]:
        return {
            "table": self.table,
            "row_id": self.row_id,
            "key_version": str(self.key_version),
            "purpose": self.purpose,
        }

    def as_aad(self) -> bytes:
        return "|".join(["certreconcile", self.table, self.row_id, str(self.key_version), self.purpose]).encode()


@dataclass(frozen=True, slots=True)
class WrappedKey:
    key_id: str  # which master key wrapped it
    ciphertext: bytes  # the DEK as wrapped by the KMS


class Kms(Protocol):
    """A key-encryption service: makes data keys and unwraps them, bound to a context."""

    name: str

    def generate_data_key(self, context: EncryptionContext) -> tuple[SecretBytes, WrappedKey]: ...

    def decrypt_data_key(self, wrapped: WrappedKey, context: EncryptionContext) -> SecretBytes: ...

    def wrap_data_key(self, dek: SecretBytes, context: EncryptionContext) -> WrappedKey:
        """Wrap an existing data key under ``context`` (``kms rewrap``: the DEK moves, the key stays sealed)."""
        ...
