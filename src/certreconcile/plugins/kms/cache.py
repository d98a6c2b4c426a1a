"""A short-lived in-memory cache of unwrapped data keys, in front of any KMS. Off by default.

``kms: {aws: {...}, cache: {max_age: 5m, max_uses: 100}}`` wraps the adapter in
:class:`CachingKms`: an unwrapped DEK is reused for at most ``max_age`` and ``max_uses``
unwraps, and at most ``max_size`` DEKs are held (the least recently used is evicted first).

An entry is keyed by the wrapped key *and* the full encryption context, so a DEK is never
handed out for another row than the one the KMS unwrapped it for. Data keys made by
``generate_data_key`` or passed to ``wrap_data_key`` are not cached.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

from certreconcile.clock import Clock, SystemClock
from certreconcile.plugins.ports import EncryptionContext, Kms, SecretBytes, WrappedKey

__all__ = ["CachingKms"]


@dataclass(slots=True)
class _Entry:
    dek: SecretBytes
    expires_at: datetime
    uses_left: int


class CachingKms:
    """A :class:`~certreconcile.plugins.ports.Kms` caching the results of ``decrypt_data_key``."""

    def __init__(
        self,
        inner: Kms,
        *,
        max_age: timedelta,
        max_uses: int,
        max_size: int = 1000,
        clock: Clock | None = None,
    ) -> None:
        if max_uses < 1 or max_size < 1:
            raise ValueError("max_uses and max_size must be at least 1")
        self._inner = inner
        self.name = inner.name
        self._max_age = max_age
        self._max_uses = max_uses
        self._max_size = max_size
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._entries: OrderedDict[tuple[str, bytes, EncryptionContext], _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def generate_data_key(self, context: EncryptionContext) -> tuple[SecretBytes, WrappedKey]:
        return self._inner.generate_data_key(context)

    def wrap_data_key(self, dek: SecretBytes, context: EncryptionContext) -> WrappedKey:
        return self._inner.wrap_data_key(dek, context)

    def decrypt_data_key(self, wrapped: WrappedKey, context: EncryptionContext) -> SecretBytes:
        key = (wrapped.key_id, wrapped.ciphertext, context)
        now = self._clock.now()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                if entry.expires_at > now and entry.uses_left > 0:
                    entry.uses_left -= 1
                    if entry.uses_left == 0:
                        del self._entries[key]
                    else:
                        self._entries.move_to_end(key)
                    self.hits += 1
                    return entry.dek
                del self._entries[key]
        dek = self._inner.decrypt_data_key(wrapped, context)  # errors are never cached
        with self._lock:
            self.misses += 1
            if self._max_uses > 1 and self._max_age > timedelta(0):
                # This unwrap is the first use; max_uses - 1 more may come from the cache.
                self._entries[key] = _Entry(dek, now + self._max_age, self._max_uses - 1)
                self._entries.move_to_end(key)
                while len(self._entries) > self._max_size:
                    self._entries.popitem(last=False)
        return dek

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
