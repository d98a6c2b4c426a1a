"""What can still be checked in a file that failed the schema, so that every problem is reported in one pass.

A file whose document fails the schema would hide every cross-reference problem of the directory
behind its schema errors. Instead, the entries the schema errors point into (``certificates[3]``,
``issuers.acme``, a bad ``policy``) are set aside and the rest of the document is validated again.
The names of the entries set aside are remembered (:class:`Unchecked`): a reference to one of them
is not reported as unknown, since the entry exists, broken; its schema error is reported already.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from certreconcile.desired.documents import DesiredDocument

__all__ = ["PLUGIN_SECTIONS", "Salvaged", "Unchecked", "salvage"]

#: The sections whose entries are named, and referenced by name from certificates (or agent/target).
PLUGIN_SECTIONS = ("issuers", "targets", "dns_providers", "agents")


@dataclass(slots=True)
class Unchecked:
    """What failed the schema, so references to it cannot be checked (and are not reported)."""

    names: dict[str, set[str]] = field(default_factory=lambda: {section: set() for section in PLUGIN_SECTIONS})
    whole_sections: set[str] = field(default_factory=set)  # a section that is not a mapping at all
    policy: bool = False  # a file's policy failed: the allowed domains are unknown

    def covers(self, section: str, name: str) -> bool:
        return section in self.whole_sections or name in self.names[section]


@dataclass(frozen=True, slots=True)
class Salvaged:
    document: DesiredDocument
    certificate_indexes: tuple[int, ...]  # the position in the file of each certificate kept


def salvage(
    model: type[DesiredDocument], data: object, errors: Sequence[Mapping[str, Any]], unchecked: Unchecked
) -> Salvaged | None:
    """The document without the entries ``errors`` point into, or None when nothing sensible is left."""
    if not isinstance(data, dict):
        return None
    kept = dict(data)
    dropped_certificates: set[int] = set()
    dropped: dict[str, set[str]] = {section: set() for section in PLUGIN_SECTIONS}
    for error in errors:
        loc = tuple(error.get("loc", ()))
        if not loc:
            return None
        head = loc[0]
        entry = loc[1] if len(loc) > 1 else None
        if head == "certificates" and isinstance(entry, int) and isinstance(kept.get(head), list):
            dropped_certificates.add(entry)
        elif head in PLUGIN_SECTIONS and isinstance(entry, str) and isinstance(kept.get(head), dict):
            dropped[str(head)].add(entry)
        else:
            if head in PLUGIN_SECTIONS:
                unchecked.whole_sections.add(str(head))
            unchecked.policy |= head == "policy"
            kept.pop(head, None)
    for section in PLUGIN_SECTIONS:
        entries = kept.get(section)
        if isinstance(entries, dict):
            kept[section] = {k: v for k, v in entries.items() if k not in dropped[section]}
        unchecked.names[section] |= dropped[section]
    indexes: tuple[int, ...] = ()
    if isinstance(kept.get("certificates"), list):
        indexes = tuple(i for i in range(len(kept["certificates"])) if i not in dropped_certificates)
        kept["certificates"] = [kept["certificates"][i] for i in indexes]
    try:
        return Salvaged(model.model_validate(kept), indexes)
    except ValidationError:
        return None
