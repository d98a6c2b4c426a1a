"""One notification as the senders get it: the texts and the webhook's JSON body, built from an outbox row."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from certreconcile.actual.outbox import NotificationRow
from certreconcile.notify.events import EVENT_TYPES, NotifyEvent

__all__ = ["Message", "message_for"]


@dataclass(frozen=True, slots=True)
class Message:
    id: str  # the same for every attempt of one event (the receiver's idempotency key)
    type: str  # certificate.issued, ...
    subject: str
    text: str
    body: bytes  # the webhook's JSON: {"type", "timestamp", "data"}


def message_for(row: NotificationRow) -> Message:
    """The message of a stored row (the same bytes on every attempt)."""
    event = NotifyEvent(row.event, row.name, row.event_key, row.payload, row.cert_id)
    data: dict[str, str] = {"event": row.event, "name": row.name, **row.payload}
    if row.cert_id is not None:
        data["cert_id"] = row.cert_id
    document = {"type": EVENT_TYPES[row.event], "timestamp": _iso(row.created_at), "data": data}
    body = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    digest = hashlib.sha256(row.event_key.encode()).hexdigest()[:32]
    return Message(f"msg_{digest}", EVENT_TYPES[row.event], event.summary(), _text(event.summary(), data), body)


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _text(summary: str, data: Mapping[str, str]) -> str:
    lines = [summary, ""]
    lines += [f"{key}: {value}" for key, value in sorted(data.items()) if value]
    return "\n".join(lines) + "\n"
