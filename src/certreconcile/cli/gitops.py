"""The GitOps glue of the CLI: PR comment files for `plan --comment-dir`, and the reviewed-plan check of
`apply --expect-changes DIGEST [--reviewed-plan FILE]`.

Binding apply to the review: the PR job posts the plan's change-set digest (and, hidden, the change set
itself) in the sticky comment; after the merge, apply re-plans the merged commit and goes ahead only when
its change set is the reviewed one, or differs from it only by renewals that fell due (or were done) in
between. Anything else is refused before any change is made, with the differences listed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from certreconcile.errors import CertReconcileError, DesiredStateError
from certreconcile.plan.plan import Plan, plan_from_json
from certreconcile.plan.review import compare_with_review, is_renewal
from certreconcile.render.comment import (
    COMMENT_MARKER,
    ReviewDataError,
    ReviewedChanges,
    render_error_comment,
    render_pr_comments,
    reviewed_changes_from_comments,
)

__all__ = [
    "check_against_review",
    "load_reviewed",
    "only_renewals",
    "write_error_comment",
    "write_plan_comments",
]

_COMMENT_FILE = re.compile(r"comment-\d+\.md")
_DIGEST = re.compile(r"[0-9a-f]{64}")


def _write_comments(directory: Path, bodies: list[str]) -> list[Path]:
    """``comment-1.md .. comment-N.md`` in ``directory``; older ``comment-*.md`` files there are removed."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.iterdir():
            if _COMMENT_FILE.fullmatch(old.name):
                old.unlink()
        paths = []
        for number, body in enumerate(bodies, start=1):
            path = directory / f"comment-{number}.md"
            path.write_text(body, encoding="utf-8")
            paths.append(path)
    except OSError as exc:
        raise CertReconcileError(
            f"cannot write the PR comments to {directory}: {exc.strerror}",
            code="comment-write-failed",
            hint="pass a writable directory to --comment-dir",
        ) from exc
    return paths


def write_plan_comments(directory: Path, plan: Plan) -> list[Path]:
    return _write_comments(directory, render_pr_comments(plan))


def write_error_comment(directory: Path, exc: CertReconcileError) -> list[Path]:
    """The comment saying why there is no plan (every validation diagnostic, or the one error)."""
    if isinstance(exc, DesiredStateError) and exc.diagnostics:
        problems = [str(diagnostic) for diagnostic in exc.diagnostics]
    else:
        problems = [exc.one_line()]
    return _write_comments(directory, [render_error_comment(problems)])


def load_reviewed(path: Path) -> ReviewedChanges:
    """The reviewed change set from the sticky comments' bodies (as the workflow saves them) or a saved plan."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CertReconcileError(
            f"cannot read the reviewed plan {path}: {exc.strerror}", code="reviewed-plan-invalid"
        ) from exc
    try:
        if COMMENT_MARKER in text:
            return reviewed_changes_from_comments(text)
        saved = plan_from_json(json.loads(text))
    except ReviewDataError as exc:
        raise CertReconcileError(
            f"{path}: {exc}", code="reviewed-plan-invalid", hint="re-run the plan job on the pull request"
        ) from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise CertReconcileError(
            f"{path} is neither the plan comments nor a saved plan: {exc}",
            code="reviewed-plan-invalid",
            hint="pass the PR comment bodies or a file from `plan --out`",
        ) from exc
    return ReviewedChanges(digest=saved.change_digest, changes=saved.changes)


def check_against_review(plan: Plan, expected: str, reviewed_file: Path | None, say: Callable[[str], None]) -> None:
    """Return when ``plan`` may be applied as reviewed; raise (nothing applied) when it may not.

    ``expected`` is the digest the reviewer saw. Equal digests: go. Otherwise the reviewed change set
    (from ``reviewed_file``) is compared with the current one: renewals that fell due since are
    tolerated and announced through ``say``; any other difference is listed through ``say`` and refused.
    """
    expected = expected.strip().lower()
    if not _DIGEST.fullmatch(expected):
        raise CertReconcileError(
            f"--expect-changes {expected!r} is not a change-set digest",
            code="usage",
            hint="pass the 64-hex digest from the plan comment (`Change set digest:`)",
        )
    if plan.change_digest == expected:
        say(f"The change set is the reviewed one ({expected[:12]}).")
        return
    if reviewed_file is None:
        raise CertReconcileError(
            f"the change set planned now ({plan.change_digest[:12]}) is not the reviewed one ({expected[:12]})",
            code="plan-differs-from-review",
            hint="pass --reviewed-plan to see what differs, or re-run the plan on a new pull request",
        )
    reviewed = load_reviewed(reviewed_file)
    if reviewed.digest != expected:
        raise CertReconcileError(
            f"{reviewed_file} holds change set {reviewed.digest[:12]}, not the expected {expected[:12]}",
            code="reviewed-plan-mismatch",
            hint="pass the plan comments of the reviewed pull request",
        )
    comparison = compare_with_review(reviewed.changes, plan.changes)
    if comparison.equal:
        say("The change set does what the reviewed one did (only reason texts or certificate ids moved).")
        return
    if comparison.acceptable:
        say("The change set differs from the reviewed one only by renewals that fell due since; applying:")
        for line in comparison.renewals:
            say(f"  {line}")
        return
    say("The change set planned now differs from the reviewed one:")
    for line in (*comparison.differences, *comparison.renewals):
        say(f"  {line}")
    count = len(comparison.differences)
    raise CertReconcileError(
        f"refusing to apply: {count} change{'s' if count != 1 else ''} not in the reviewed plan; nothing changed",
        code="plan-differs-from-review",
        hint="open a pull request for the current state and review its plan",
    )


def only_renewals(plan: Plan, say: Callable[[str], None]) -> Plan:
    """``plan`` cut down to the renewals time made due; every other change is named and left for review.

    For the scheduled renewal job: declared changes go through a reviewed pull request (and its
    ``--expect-changes`` apply), never through a timer.
    """
    kept = tuple(change for change in plan.changes if is_renewal(change))
    skipped = [change for change in plan.changes if not is_renewal(change)]
    if skipped:
        say(f"Left for a reviewed apply ({len(skipped)} change{'s' if len(skipped) != 1 else ''}, not renewals):")
        for change in skipped:
            say(f"  {change.action.symbol} {change.action.value} {change.name}")
    return replace(plan, changes=kept)
