"""The chain head file of ``audit verify --export-head FILE`` and ``--head FILE``.

A small JSON document: the chain's last ``seq`` and that row's ``row_hash`` (not a
secret). Kept somewhere the database's superuser cannot rewrite (committed to the
declarations' git repository, a ticket, another host), it later proves the chain still
holds that row: a truncated or wholly rewritten tail no longer does.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from datetime import datetime
from pathlib import Path

from certreconcile.audit.events import AuditChainHead
from certreconcile.audit.verify import Anchor
from certreconcile.errors import CertReconcileError

__all__ = ["HEAD_FORMAT", "export_head", "load_head"]

HEAD_FORMAT = "certreconcile-audit-head-v1"
_HASH = re.compile(r"^[0-9a-f]{64}$")


def export_head(path: Path, head: AuditChainHead, at: datetime) -> None:
    """Write ``head`` to ``path`` atomically (a temporary file beside it, then a rename)."""
    document = {"format": HEAD_FORMAT, "seq": head.seq, "row_hash": head.row_hash, "exported_at": at.isoformat()}
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    directory = path.parent if str(path.parent) else Path()
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as stream:
                stream.write(text)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise CertReconcileError(
            f"cannot write the audit chain head to {path}: {exc.strerror or exc}",
            code="audit-head-unwritable",
            hint="choose a writable path for --export-head",
        ) from exc


def load_head(path: Path) -> Anchor:
    """The head recorded in ``path`` (written by :func:`export_head`)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CertReconcileError(
            f"cannot read the audit chain head {path}: {exc.strerror or exc}",
            code="audit-head-invalid",
            hint="pass the file written by `certreconcile audit verify --export-head`",
        ) from exc
    except ValueError:
        document = None
    seq = document.get("seq") if isinstance(document, dict) else None
    row_hash = document.get("row_hash") if isinstance(document, dict) else None
    if (
        not isinstance(document, dict)
        or document.get("format") != HEAD_FORMAT
        or not isinstance(seq, int)
        or isinstance(seq, bool)
        or seq < 0
        or not isinstance(row_hash, str)
        or not _HASH.match(row_hash)
    ):
        raise CertReconcileError(
            f"{path} is not an audit chain head (JSON with format {HEAD_FORMAT}, seq and row_hash)",
            code="audit-head-invalid",
            hint="pass the file written by `certreconcile audit verify --export-head`",
        )
    return Anchor(AuditChainHead(seq=seq, row_hash=row_hash), str(path))
