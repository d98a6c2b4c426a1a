"""TLS client contexts shared by the deliveries of one process (a fan-out to many webhook receivers).

Building a context reads and parses its CA bundle (and its client key pair): about half a
millisecond of CPU, as much as the rest of a delivery's own work. Deliveries naming the same
files share one context while the files are unchanged (path, device, inode, size, modification
time) and for at most five minutes (the system trust store, which has no file named here, is
read again after that). A context holds a client key in memory only, as a per-delivery one did.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["ContextCache"]

_TTL_SECONDS = 300.0
_SIZE = 64

_Key = tuple[tuple[str, int, int, int, int] | None, ...]


def _signature(files: tuple[Path | None, ...]) -> _Key | None:
    """What identifies the files' content; None when one cannot be read (never cached: the build says why)."""
    parts: list[tuple[str, int, int, int, int] | None] = []
    for path in files:
        if path is None:
            parts.append(None)
            continue
        try:
            stat = path.stat()
        except OSError:
            return None
        parts.append((str(path), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns))
    return tuple(parts)


class ContextCache:
    """At most ``size`` contexts, each reused for ``ttl`` seconds while its files are unchanged. Thread-safe."""

    def __init__(
        self, *, ttl: float = _TTL_SECONDS, size: int = _SIZE, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl
        self._size = size
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._contexts: dict[_Key, tuple[float, ssl.SSLContext]] = {}

    def get(self, files: tuple[Path | None, ...], build: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        """The context for ``files`` (CA bundle, client certificate, client key...), built by ``build`` when needed."""
        key = _signature(files)
        if key is None:
            return build()
        now = self._monotonic()
        with self._lock:
            cached = self._contexts.get(key)
            if cached is not None and now - cached[0] < self._ttl:
                return cached[1]
        context = build()  # outside the lock: a slow file read holds no other delivery back
        with self._lock:
            if key not in self._contexts and len(self._contexts) >= self._size:
                del self._contexts[min(self._contexts, key=lambda old: self._contexts[old][0])]
            self._contexts[key] = (now, context)
        return context
