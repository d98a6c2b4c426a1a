"""The hash of a CertAudit row: the Python twin of ``certaudit_row_hash`` (migration 0007).

The database computes every row's hash when the row is inserted; :func:`row_hash`
computes it again from the columns, independently, so a verifier trusts neither the
stored hash nor the trigger. The encoding (documented in the migration, repeated here):

    SHA-256 over the UTF-8 bytes of ten fields, in this order:
        'certaudit-v1', seq, id, cert_id, name, action, actor, timestamp, detail, prev_hash
    each as <number of bytes in decimal> ':' <the bytes>, and NULL as '~'.

The length prefix makes the encoding unambiguous (no separator can be forged inside a
field). ``timestamp`` is the number of microseconds since the Unix epoch; ``detail`` the
jsonb text form read from the database (``detail::text``).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from certreconcile.audit.events import AuditChainRow

__all__ = ["GENESIS_HASH", "HASH_TAG", "encode_row", "row_hash"]

#: The ``prev_hash`` of the first row (seq 1), and the head of an empty chain.
GENESIS_HASH = "0" * 64
#: The first field of every hashed row: names the encoding, so it can change for later rows.
HASH_TAG = "certaudit-v1"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _field(text: str | None) -> bytes:
    if text is None:
        return b"~"
    data = text.encode("utf-8")
    return str(len(data)).encode("ascii") + b":" + data


def encode_row(row: AuditChainRow) -> bytes:
    """The bytes hashed for ``row`` (its stored ``row_hash`` excluded, its ``prev_hash`` included)."""
    microseconds = (row.at - _EPOCH) // _MICROSECOND
    fields = (
        HASH_TAG,
        str(row.seq),
        str(row.id),
        row.cert_id,
        row.name,
        row.action,
        row.actor,
        str(microseconds),
        row.detail,
        row.prev_hash,
    )
    return b"".join(_field(text) for text in fields)


def row_hash(row: AuditChainRow) -> str:
    """The lower-case hex SHA-256 the row must carry as ``row_hash``."""
    return hashlib.sha256(encode_row(row)).hexdigest()
