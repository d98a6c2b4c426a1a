"""The ``notify:`` section: merged from one file, frozen into a :class:`~certreconcile.desired.model.NotifySpec`.

Like ``policy``, at most one file declares it. Each sink becomes a
:class:`~certreconcile.desired.model.NotifySinkSpec` whose ``config`` is its kind's model (secrets named
by ``*_env`` keys only); the senders live in :mod:`certreconcile.notify`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from types import MappingProxyType

from certreconcile.desired.declarations import NodeRef
from certreconcile.desired.documents import NotifyDocument
from certreconcile.desired.model import NOTIFY_EVENTS, NotifySinkSpec, NotifySpec, SourceLocation

__all__ = ["notify_spec"]


def notify_spec(
    document: NotifyDocument | None, ref: NodeRef | None, located: Mapping[NodeRef, SourceLocation]
) -> NotifySpec | None:
    """The frozen ``notify:`` (None when no file declares it)."""
    if document is None or ref is None:
        return None
    sinks: dict[str, NotifySinkSpec] = {}
    for name, entry in sorted(document.sinks.items()):
        kind, config = entry.kind()
        payload = {"kind": kind, "config": config.model_dump(mode="json")}
        fingerprint = hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        events = frozenset(entry.events) if entry.events is not None else frozenset(NOTIFY_EVENTS)
        location = located.get(NodeRef(ref.file, (*ref.path, "sinks", name), "key"))
        sinks[name] = NotifySinkSpec(name, kind, config, fingerprint, location, events)
    return NotifySpec(MappingProxyType(sinks), document.expiring_within.delta, located.get(ref))
