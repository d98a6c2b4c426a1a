"""An in-memory KMS with the semantics of the real ones, for tests without a server.

:class:`FakeKms` passes the same contract suite as the local, AWS and Vault adapters
(:mod:`certreconcile.testing.kms_contract`, run by ``tests/contract/test_kms.py``), so it
cannot drift from them. A wrapped data key is an opaque random handle: the data key and
the context it is bound to stay in this object's memory, never in the handle.

``available=False`` makes every call fail as an unreachable KMS does. ``generated``,
``decrypted`` and ``wrapped`` count the calls, e.g. to show that ``plan`` never decrypts.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from certreconcile.errors import KmsError
from certreconcile.plugins.ports import EncryptionContext, SecretBytes, WrappedKey

__all__ = ["FakeKms"]

_DEK_BYTES = 32


@dataclass(frozen=True, slots=True)
class _Entry:
    dek: bytes
    context: EncryptionContext


class FakeKms:
    def __init__(self, *, name: str = "fake", key_id: str = "fake-key-1", available: bool = True) -> None:
        self.name = name
        self.key_id = key_id
        self.available = available
        self.generated = 0
        self.decrypted = 0
        self.wrapped = 0
        self._entries: dict[bytes, _Entry] = {}
        self._lock = threading.Lock()

    def _check_available(self, context: EncryptionContext) -> None:
        if not self.available:
            raise KmsError(
                f"cannot reach the {self.name} KMS for {context.table} {context.row_id}",
                code="kms-unavailable",
                hint="retry later",
            )

    def generate_data_key(self, context: EncryptionContext) -> tuple[SecretBytes, WrappedKey]:
        self._check_available(context)
        dek = os.urandom(_DEK_BYTES)
        handle = os.urandom(16)
        with self._lock:
            self._entries[handle] = _Entry(dek, context)
            self.generated += 1
        return SecretBytes(dek), WrappedKey(key_id=self.key_id, ciphertext=handle)

    def wrap_data_key(self, dek: SecretBytes, context: EncryptionContext) -> WrappedKey:
        self._check_available(context)
        if len(dek.reveal()) != _DEK_BYTES:
            raise KmsError("a data key to wrap is not 256 bits", code="kms-error")
        handle = os.urandom(16)
        with self._lock:
            self._entries[handle] = _Entry(dek.reveal(), context)
            self.wrapped += 1
        return WrappedKey(key_id=self.key_id, ciphertext=handle)

    def decrypt_data_key(self, wrapped: WrappedKey, context: EncryptionContext) -> SecretBytes:
        self._check_available(context)
        if wrapped.key_id != self.key_id:
            raise KmsError(
                f"this data key was wrapped by master key {wrapped.key_id}, not by {self.key_id}",
                code="kms-wrong-master-key",
            )
        with self._lock:
            entry = self._entries.get(wrapped.ciphertext)
            self.decrypted += 1
        if entry is None or entry.context != context:
            raise KmsError(
                f"the data key of {context.table} {context.row_id} does not unwrap under its own context",
                code="kms-decrypt-failed",
                hint="the stored key_ref belongs to another row or was altered",
            )
        return SecretBytes(entry.dek)
