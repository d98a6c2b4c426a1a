"""The nonces seen within the request window: a request whose nonce is here again is a replay.

A nonce is remembered until its request's timestamp leaves the window (``timestamp + window``):
past that, a replay of it is refused as stale anyway. Thread-safe; memory is bounded by the
requests of one window (only the authenticated applier can send them).
"""

from __future__ import annotations

import heapq
import threading
from datetime import datetime, timedelta

__all__ = ["NonceCache"]


class NonceCache:
    def __init__(self, window: timedelta) -> None:
        self._window = window
        self._expiry: dict[str, datetime] = {}
        self._queue: list[tuple[datetime, str]] = []  # (expiry, nonce), the earliest first
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._expiry)

    def accept(self, nonce: str, timestamp: datetime, now: datetime) -> bool:
        """Record ``nonce`` (of a request made at ``timestamp``); False when it was seen and is still remembered."""
        with self._lock:
            self._evict(now)
            if nonce in self._expiry:
                return False
            expiry = max(timestamp, now) + self._window
            self._expiry[nonce] = expiry
            heapq.heappush(self._queue, (expiry, nonce))
            return True

    def set_window(self, window: timedelta) -> None:
        """Use ``window`` for the nonces seen from now on (a reload); those seen keep their expiry."""
        with self._lock:
            self._window = window

    def _evict(self, now: datetime) -> None:
        while self._queue and self._queue[0][0] < now:
            _, nonce = heapq.heappop(self._queue)
            self._expiry.pop(nonce, None)
