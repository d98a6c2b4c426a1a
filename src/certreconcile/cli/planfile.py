"""Reading a plan saved by ``plan --out`` (for ``apply FILE`` and ``show FILE``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from certreconcile.errors import CertReconcileError

if TYPE_CHECKING:
    from certreconcile.plan.plan import Plan

__all__ = ["read_plan_file"]


def read_plan_file(plan_file: Path) -> Plan:
    """The plan in ``plan_file``; a clear error when it is missing, not JSON or not a plan of this version."""
    from certreconcile.plan import plan_from_json

    try:
        return plan_from_json(json.loads(plan_file.read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CertReconcileError(
            f"{plan_file} is not a readable certreconcile plan: {exc}",
            code="plan-file-invalid",
            hint="save one with `plan --out FILE`",
        ) from exc
