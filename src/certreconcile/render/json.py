"""The plan as JSON: the canonical ``Plan.dumps`` form, validated by ``schemas/plan.schema.json``."""

from __future__ import annotations

from certreconcile.plan.plan import Plan

__all__ = ["render_json"]


def render_json(plan: Plan) -> str:
    """Byte-deterministic JSON (sorted keys, two-space indent, UTF-8 text, trailing newline)."""
    return plan.dumps()
