"""Plans built by hand for the render tests, and the golden-file helper.

Regenerate the golden files with ``UPDATE_GOLDEN=1 pytest tests/unit/render`` and review the diff.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from certreconcile.plan.destroy import DestroyCheck, DestroyThreshold
from certreconcile.plan.fleet import AgentRenewal
from certreconcile.plan.plan import Action, Change, Plan, PlanDiagnostic, Reason, ReasonCode, Severity, trigger_of

GOLDEN_DIR = Path(__file__).parent / "golden"
CREATED_AT = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)
FINGERPRINT = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
#: The sample plans were planned on a state managing 40 names, with the default destroy threshold.
DESTROY = DestroyCheck(managed=40, threshold=DestroyThreshold())


def make_change(
    action: Action,
    name: str,
    *reasons: tuple[ReasonCode, str],
    domains: tuple[str, ...] | None = None,
    issuer: str | None = "internal",
    key_type: str | None = "ecdsa-p256",
    targets: tuple[str, ...] = ("edge-nginx", "deploy-dir"),
    removed_targets: tuple[str, ...] = (),
    replaces: str | None = None,
    replaces_fingerprint: str | None = None,
    served: tuple[tuple[str, str], ...] = (),
    deferred_until: datetime | None = None,
    deferred_reason: str | None = None,
) -> Change:
    return Change(
        action=action,
        name=name,
        reasons=tuple(Reason(code, message) for code, message in reasons),
        trigger=trigger_of(Reason(code, message) for code, message in reasons),
        domains=domains if domains is not None else (f"{name}.example.com",),
        issuer=issuer,
        key_type=key_type,
        targets=targets,
        removed_targets=removed_targets,
        replaces=replaces,
        replaces_fingerprint=replaces_fingerprint,
        served=served,
        idempotency_key=f"{action.value}:{name}:7",
        deferred_until=deferred_until,
        deferred_reason=deferred_reason,
    )


def make_plan(
    *changes: Change,
    warnings: tuple[str, ...] = (),
    diagnostics: tuple[PlanDiagnostic, ...] = (),
    destroy: DestroyCheck | None = DESTROY,
) -> Plan:
    return Plan(
        changes=changes,
        created_at=CREATED_AT,
        desired_digest="sha256:" + "ab" * 32,
        lineage="0b5e7c1e-3f0a-4c39-9d55-8f1c2a9b6e01",
        serial=7,
        git_commit="3d2f1e0c9b8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e",
        warnings=warnings,
        diagnostics=diagnostics,
        destroy=destroy,
    )


def build_sample_plans() -> dict[str, Plan]:
    every_action = make_plan(
        make_change(
            Action.REVOKE,
            "legacy",
            (ReasonCode.REMOVED_REVOKE, "it was removed from the desired state (on_delete: revoke)"),
            targets=(),
            replaces="c-0041",
            replaces_fingerprint="0123456789abcdef0123456789abcdef",
        ),
        make_change(
            Action.RETIRE,
            "old-blog",
            (ReasonCode.REMOVED_RETIRE, "it was removed from the desired state (on_delete: retire)"),
            issuer=None,
            key_type=None,
            targets=(),
            replaces="c-0017",
        ),
        make_change(
            Action.ROTATE,
            "shop",
            (ReasonCode.RENEWAL_WINDOW, "it expires in 12 days (renew_before 30d)"),
            (ReasonCode.DOMAINS_CHANGED, "domains changed (+www.shop.example.com)"),
            domains=("shop.example.com", "www.shop.example.com"),
            replaces="c-0042",
            replaces_fingerprint=FINGERPRINT,
        ),
        make_change(
            Action.ISSUE,
            "api",
            (ReasonCode.NEW_CERTIFICATE, "it has no certificate yet"),
            issuer="letsencrypt",
            key_type="rsa-2048",
            targets=("edge-nginx",),
        ),
        make_change(
            Action.REDISTRIBUTE,
            "docs",
            (ReasonCode.TARGET_ADDED, "target cdn was added"),
            (ReasonCode.TARGET_REMOVED, "target old-lb was removed"),
            targets=("cdn",),
            removed_targets=("old-lb",),
        ),
    )
    drift = make_plan(
        make_change(
            Action.REDISTRIBUTE,
            "shop",
            (ReasonCode.TARGET_DRIFT, "edge-nginx serves another certificate"),
            (ReasonCode.TARGET_UNVERIFIED, "deploy-dir was never verified"),
            domains=("shop.example.com", "www.shop.example.com"),
            served=(
                ("edge-nginx", "sha256 1111222233334444 (expected 9f86d081884c7d65)"),
                ("deploy-dir", "nothing (connection refused)"),
            ),
        ),
    )
    warnings = make_plan(
        make_change(
            Action.ISSUE,
            "promo",
            (ReasonCode.NEW_CERTIFICATE, "it has no certificate yet"),
            domains=("promo.example.com",),
            issuer="letsencrypt",
            targets=("edge-nginx",),
        ),
        warnings=(
            "this apply would order 51 certificates for example.com this week (Let's Encrypt allows 50)",
            "issuer letsencrypt-staging is not reachable; plan used the last known ARI data",
        ),
    )
    rate_limits = make_plan(
        make_change(
            Action.ISSUE,
            "promo",
            (ReasonCode.NEW_CERTIFICATE, "it is new"),
            domains=("promo.example.co.uk",),
            issuer="letsencrypt",
            targets=("edge-nginx",),
        ),
        diagnostics=(
            PlanDiagnostic(
                Severity.ERROR,
                "rate-limit-registered-domain",
                "Let's Encrypt rate limit: this plan would make 51 new certificates for example.co.uk within 7 days"
                " (50 in the last 7 days + 1 planned: promo); the limit is 50 per registered domain per week",
                "split the change over several weeks; to test, use the letsencrypt-staging directory",
            ),
            PlanDiagnostic(
                Severity.WARNING,
                "issuance-backoff",
                "shop: backing off after 3 failed issuances until 2026-11-28 13:30 UTC; change the declaration or wait",
                "`certreconcile rotate shop` tries again at once",
            ),
        ),
    )
    # Backing off after failed attempts: still pending (never "No changes"); the valid certificate of shop
    # goes to the target that lacks it while its rotation waits.
    pending = make_plan(
        make_change(
            Action.ROTATE,
            "shop",
            (ReasonCode.ROTATION_INCOMPLETE, "its last rotation stopped before a new certificate was stored"),
            replaces="c-0042",
            replaces_fingerprint=FINGERPRINT,
            deferred_until=datetime(2026, 11, 28, 13, 30, tzinfo=UTC),
            deferred_reason="last attempt failed at 2026-11-28 05:30 UTC (3 failed issuances in a row);"
            " see `certreconcile audit --name shop --action failed`",
        ),
        make_change(
            Action.ISSUE,
            "api",
            (ReasonCode.NEW_CERTIFICATE, "it is new"),
            targets=("edge-nginx",),
            deferred_until=datetime(2026, 11, 28, 10, 15, tzinfo=UTC),
            deferred_reason="last attempt failed at 2026-11-28 09:15 UTC (1 failed issuance in a row);"
            " see `certreconcile audit --name api --action failed`",
        ),
        make_change(
            Action.REDISTRIBUTE,
            "shop",
            (ReasonCode.TARGET_ADDED, "deploy-dir has not received it yet"),
            targets=("deploy-dir",),
        ),
        diagnostics=(
            PlanDiagnostic(
                Severity.WARNING,
                "issuance-backoff",
                "api: backing off after 1 failed issuance until 2026-11-28 10:15 UTC; change the declaration or wait",
                "`certreconcile rotate api` tries again at once",
            ),
            PlanDiagnostic(
                Severity.WARNING,
                "issuance-backoff",
                "shop: backing off after 3 failed issuances until 2026-11-28 13:30 UTC; change the declaration or wait",
                "`certreconcile rotate shop` tries again at once",
            ),
        ),
    )
    empty_with_warning = make_plan(warnings=("target old-lb is not referenced by any certificate",))
    # One retirement out of 40 managed names: within the destroy threshold, shown first all the same.
    one_retirement = make_plan(
        make_change(
            Action.RETIRE,
            "old-blog",
            (ReasonCode.REMOVED_RETIRE, "it was removed from the desired state (on_delete: retire)"),
            issuer=None,
            key_type=None,
            targets=(),
            replaces="c-0017",
        ),
        make_change(
            Action.ISSUE,
            "api",
            (ReasonCode.NEW_CERTIFICATE, "it has no certificate yet"),
            targets=("edge-nginx",),
        ),
    )
    fleet = replace(
        make_plan(
            make_change(
                Action.REDISTRIBUTE,
                "shop",
                (
                    ReasonCode.TARGET_UNVERIFIED,
                    "web-2/edge-nginx holds an older certificate; agent web-2 is unreachable "
                    "(last seen 2026-12-05T08:15Z)",
                ),
                domains=("shop.example.com",),
                targets=("web-2/edge-nginx",),
                served=(("web-2/edge-nginx", "unknown: agent web-2 is unreachable (last seen 2026-12-05T08:15Z): "
                         "connection refused; should serve sha256 9f86d081884c7d65"),),
            ),
            warnings=("agent web-2 did not answer (connection refused); last seen 2026-12-05T08:15Z",),
        ),
        agent_renewals=(
            AgentRenewal("lb-1", datetime(2026, 12, 6, 9, 0, tzinfo=UTC), "expired 3 hours ago"),
            AgentRenewal("web-1", datetime(2026, 12, 15, 12, 0, tzinfo=UTC), "expires in 9 days"),
        ),
    )
    agents_only = replace(
        make_plan(),
        agent_renewals=(AgentRenewal("web-1", datetime(2026, 12, 15, 12, 0, tzinfo=UTC), "expires in 9 days"),),
    )
    return {
        "fleet": fleet,
        "agents_only": agents_only,
        "pending": pending,
        "empty": make_plan(),
        "every_action": every_action,
        "drift": drift,
        "warnings": warnings,
        "rate_limits": rate_limits,
        "empty_with_warning": empty_with_warning,
        "one_retirement": one_retirement,
    }


SAMPLE_PLAN_NAMES = sorted(build_sample_plans())


@pytest.fixture(params=SAMPLE_PLAN_NAMES)
def sample_plan(request: pytest.FixtureRequest) -> tuple[str, Plan]:
    """Each sample plan in turn, as ``(name, plan)``."""
    name: str = request.param
    return name, build_sample_plans()[name]


@pytest.fixture
def plan_factory() -> Callable[..., Plan]:
    return make_plan


@pytest.fixture
def change_factory() -> Callable[..., Change]:
    return make_change


def assert_golden(filename: str, actual: str) -> None:
    """Compare ``actual`` with ``golden/<filename>`` byte for byte; rewrite it when ``UPDATE_GOLDEN=1``."""
    path = GOLDEN_DIR / filename
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(actual.encode("utf-8"))
        return
    if not path.exists():
        pytest.fail(f"golden file {path} is missing; run with UPDATE_GOLDEN=1 to create it, then review it")
    expected = path.read_bytes().decode("utf-8")
    assert actual == expected, f"{filename} differs from its golden file (UPDATE_GOLDEN=1 rewrites it)"


@pytest.fixture
def golden() -> Callable[[str, str], None]:
    return assert_golden
