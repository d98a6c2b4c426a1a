"""``audit verify``: walk the CertAudit hash chain and report the first sign of tampering.

The walk reads the chain in ``seq`` order, one page at a time (constant memory), and
recomputes every row's hash in Python (:func:`certreconcile.audit.chain.row_hash`).
It stops at the first problem, in chain order:

* ``deleted``: a gap in ``seq`` (rows missing before the row found there);
* ``reordered``: a row is chained after a row that now comes later (seq swapped);
* ``changed``: a row's content no longer matches its hash, or the row before it was
  replaced (its hash recomputed, so the next row's ``prev_hash`` no longer matches);
* ``truncated``: the chain ends before a head known to exist (the one the insert
  trigger recorded in CertAuditHead, or one exported earlier): its last rows are gone;
* ``rewritten``: the row at a known head's seq carries another hash: the chain was
  rewritten, hashes recomputed, at or before that seq.

A superuser who rewrites the tail, recomputes every hash and moves CertAuditHead too
leaves a consistent chain: only a head exported earlier and kept elsewhere
(``--export-head`` now, ``--head`` later) detects that.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from certreconcile.audit.chain import GENESIS_HASH, row_hash
from certreconcile.audit.events import AuditChainHead, AuditChainRow

__all__ = [
    "DATABASE_HEAD",
    "PAGE_SIZE",
    "Anchor",
    "AuditChainReader",
    "Problem",
    "Tampering",
    "VerifyReport",
    "verify_chain",
]

PAGE_SIZE = 1000
#: The source name of the head the insert trigger keeps in the database.
DATABASE_HEAD = "CertAuditHead"


class Tampering(enum.StrEnum):
    CHANGED = "changed"
    DELETED = "deleted"
    REORDERED = "reordered"
    TRUNCATED = "truncated"
    REWRITTEN = "rewritten"


@dataclass(frozen=True, slots=True)
class Problem:
    kind: Tampering
    seq: int  # the position where it shows
    id: int | None  # the CertAudit id of the row it concerns, when there is one
    message: str


@dataclass(frozen=True, slots=True)
class Anchor:
    """A head known to have existed: the chain must still hold ``head.row_hash`` at ``head.seq``."""

    head: AuditChainHead
    source: str  # DATABASE_HEAD, or the file it was read from


@dataclass(frozen=True, slots=True)
class VerifyReport:
    rows: int  # rows found intact, from seq 1
    head: AuditChainHead  # the last intact row (the whole chain's head when intact)
    anchors: tuple[Anchor, ...]  # the heads checked
    problem: Problem | None

    @property
    def intact(self) -> bool:
        return self.problem is None


@runtime_checkable
class AuditChainReader(Protocol):
    """What the verifier reads (implemented by the PostgreSQL session)."""

    def audit_chain_head(self) -> AuditChainHead: ...

    def audit_chain_page(self, after_seq: int, limit: int) -> Sequence[AuditChainRow]: ...

    def audit_chain_row_with_hash(self, row_hash: str) -> AuditChainRow | None: ...


@dataclass
class _Walk:
    reader: AuditChainReader
    anchors: dict[int, list[Anchor]]
    seq: int = 0  # the last intact row's
    id: int | None = None
    prev_hash: str = GENESIS_HASH
    before: tuple[int, int | None, str] = (0, None, GENESIS_HASH)  # (seq, id, prev_hash) one row back
    problem: Problem | None = field(default=None)

    def step(self, row: AuditChainRow) -> bool:
        """Check one row (the next in seq order); False once a problem is found."""
        if row.seq != self.seq + 1:
            missing = f"seq {self.seq + 1}" if row.seq == self.seq + 2 else f"seq {self.seq + 1} to {row.seq - 1}"
            self.problem = Problem(
                Tampering.DELETED,
                self.seq + 1,
                row.id,
                f"{missing} missing before row id {row.id} (seq {row.seq}): deleted (or renumbered)",
            )
        elif row.prev_hash != self.prev_hash:
            self.problem = self._broken_link(row)
        elif row_hash(row) != row.row_hash:
            self.problem = Problem(
                Tampering.CHANGED,
                row.seq,
                row.id,
                f"row id {row.id} (seq {row.seq}) was changed: its content no longer matches its hash",
            )
        else:
            self.problem = self._check_anchors(row)
        if self.problem is not None:
            return False
        self.before = (self.seq, self.id, self.prev_hash)
        self.seq, self.id, self.prev_hash = row.seq, row.id, row.row_hash
        return True

    def _broken_link(self, row: AuditChainRow) -> Problem:
        chained_to = self.reader.audit_chain_row_with_hash(row.prev_hash)
        if chained_to is not None and chained_to.seq > row.seq:
            return Problem(
                Tampering.REORDERED,
                row.seq,
                row.id,
                f"row id {row.id} (seq {row.seq}) was chained after row id {chained_to.id}, which now comes "
                f"after it (seq {chained_to.seq}): rows were reordered",
            )
        if self.id is None:
            return Problem(
                Tampering.DELETED,
                row.seq,
                row.id,
                f"row id {row.id} (seq {row.seq}) does not start the chain: the rows before it were deleted "
                "and the rest renumbered",
            )
        problem = Problem(
            Tampering.CHANGED,
            self.seq,
            self.id,
            f"row id {row.id} (seq {row.seq}) is not chained to row id {self.id} (seq {self.seq}) before it: "
            "that row was replaced, its hash recomputed (or rows were deleted or inserted and renumbered)",
        )
        self.seq, self.id, self.prev_hash = self.before  # the replaced row is not intact
        return problem

    def _check_anchors(self, row: AuditChainRow) -> Problem | None:
        for anchor in self.anchors.get(row.seq, ()):
            if anchor.head.row_hash != row.row_hash:
                return Problem(
                    Tampering.REWRITTEN,
                    row.seq,
                    row.id,
                    f"row id {row.id} (seq {row.seq}) is not the row {anchor.source} recorded at that seq: "
                    f"the chain was rewritten at or before seq {row.seq}",
                )
        return None

    def finish(self) -> None:
        """After the last row: every known head must have been reached."""
        for seq in sorted(self.anchors):
            if seq <= self.seq:
                continue
            source = self.anchors[seq][0].source
            self.problem = Problem(
                Tampering.TRUNCATED,
                self.seq + 1,
                None,
                f"the chain ends at seq {self.seq}, but {source} recorded seq {seq}: "
                f"its last {seq - self.seq} row{'s' if seq - self.seq != 1 else ''} were deleted",
            )
            return


def verify_chain(reader: AuditChainReader, heads: Sequence[Anchor] = (), *, page_size: int = PAGE_SIZE) -> VerifyReport:
    """Walk the whole chain; check it against the database's head and ``heads`` (exported earlier)."""
    anchors = (Anchor(reader.audit_chain_head(), DATABASE_HEAD), *heads)
    walk = _Walk(reader, {})
    for anchor in anchors:
        walk.anchors.setdefault(anchor.head.seq, []).append(anchor)
    genesis = [anchor for anchor in walk.anchors.get(0, ()) if anchor.head.row_hash != GENESIS_HASH]
    if genesis:
        walk.problem = Problem(
            Tampering.REWRITTEN, 0, None, f"{genesis[0].source} records seq 0 with a hash other than the genesis hash"
        )
    after = 0
    while walk.problem is None:
        page = reader.audit_chain_page(after, page_size)
        if not page or not all(walk.step(row) for row in page):
            break
        after = page[-1].seq
    if walk.problem is None:
        walk.finish()
    return VerifyReport(
        rows=walk.seq,
        head=AuditChainHead(seq=walk.seq, row_hash=walk.prev_hash),
        anchors=anchors,
        problem=walk.problem,
    )
