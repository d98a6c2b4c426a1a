"""Let's Encrypt rate-limit budgets in the plan: table-driven, pure (no store, no network)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from certreconcile.actual.model import (
    ActualCertificate,
    ActualState,
    IssuanceBackoff,
    IssuanceHistory,
    Observations,
    PastIssuance,
    PastOrder,
    RenewalWindow,
    StateMeta,
)
from certreconcile.apply.executor import ApplyEnvironment, apply_plan
from certreconcile.clock import FixedClock
from certreconcile.desired.model import DesiredState
from certreconcile.domain.keys import KeyType
from certreconcile.domain.names import registered_domain
from certreconcile.domain.policy import OnDelete
from certreconcile.domain.status import CertStatus
from certreconcile.errors import ApplyError
from certreconcile.plan import Action, Plan, Severity, build_plan
from certreconcile.plan.backoff import declaration_digest
from certreconcile.plan.budget import (
    CODE_EXACT_SET,
    CODE_NEW_ORDERS,
    CODE_REGISTERED_DOMAIN,
    letsencrypt_limits,
)
from certreconcile.testing.fake_kms import FakeKms
from certreconcile.testing.fake_repository import InMemoryStore
from engine import T0, load

LE = "https://acme-v02.api.letsencrypt.org/directory"
LE_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)


def desired_with(tmp_path: Path, certificates: list[dict[str, Any]]) -> DesiredState:
    doc = {
        "kms": {"local": {}},
        "issuers": {
            "le": {"acme": {"directory": "letsencrypt", "email": "ops@example.com"}},
            "le-staging": {"acme": {"directory": "letsencrypt-staging"}},
            "other-acme": {"acme": {"directory": "https://acme.internal.example/directory"}},
            "internal": {"local_ca": {"common_name": "Test CA", "lifetime": "90d"}},
        },
        "dns_providers": {
            "corp": {"rfc2136": {"server": "127.0.0.1:53", "tsig_key_name": "k", "tsig_secret_env": "CORP_TSIG"}}
        },
        "targets": {"deploy": {"files": {"dir": "out"}}},
        "certificates": certificates,
    }
    return load(tmp_path, doc)


def certs(count: int, *, issuer: str = "le", suffix: str = "example.com", prefix: str = "c") -> list[dict[str, Any]]:
    return [
        {"name": f"{prefix}{i}", "domains": [f"{prefix}{i}.{suffix}"], "issuer": issuer, "targets": ["deploy"]}
        for i in range(count)
    ]


def past(
    count: int,
    *,
    suffix: str = "example.com",
    age: timedelta = DAY,
    directory: str = LE,
    ari: bool = False,
    renewal: bool = False,
) -> tuple[PastIssuance, ...]:
    return tuple(
        PastIssuance(directory, frozenset({f"h{i}.{suffix}"}), T0 - age, ari_renewal=ari, renewal=renewal)
        for i in range(count)
    )


def actual(
    *certificates: ActualCertificate,
    issuances: tuple[PastIssuance, ...] = (),
    orders: tuple[PastOrder, ...] = (),
) -> ActualState:
    return ActualState(
        meta=StateMeta(lineage="L", serial=1),
        certificates={c.name: c for c in certificates},
        issuance_history=IssuanceHistory(issuances=issuances, orders=orders),
    )


def current(name: str, domains: tuple[str, ...], *, issuer: str = "le", **overrides: Any) -> ActualCertificate:
    base = ActualCertificate(
        id=f"id-{name}",
        name=name,
        domains=domains,
        issuer=issuer,
        key_type=KeyType.ECDSA_P256,
        serial_number=f"serial-{name}",
        not_before=T0 - 80 * DAY,
        not_after=T0 + 10 * DAY,  # inside the default renewal window: a rotation is due
        status=CertStatus.ACTIVE,
        fingerprint="f" * 64,
        on_delete=OnDelete.RETIRE,
        has_key=True,
    )
    return replace(base, **overrides)


def plan_for(desired: DesiredState, state: ActualState) -> Plan:
    return build_plan(desired, state, Observations(), T0)


def by_code(plan: Plan, code: str) -> list[tuple[Severity, str]]:
    return [(d.severity, d.summary) for d in plan.diagnostics if d.code == code]


# --- per registered domain ---------------------------------------------------------------


@dataclass(frozen=True)
class DomainCase:
    id: str
    planned: int
    history: tuple[PastIssuance, ...]
    expected: Severity | None
    issuer: str = "le"


DOMAIN_CASES = [
    DomainCase("39-planned-is-quiet", 39, (), None),
    DomainCase("40-planned-warns", 40, (), Severity.WARNING),
    DomainCase("49-past-plus-1-is-at-the-limit", 1, past(49), Severity.WARNING),
    DomainCase("50-past-plus-1-errors", 1, past(50), Severity.ERROR),
    DomainCase("51-planned-errors", 51, (), Severity.ERROR),
    DomainCase("history-older-than-7-days-is-ignored", 1, past(60, age=8 * DAY), None),
    DomainCase("ari-renewals-in-history-are-exempt", 1, past(60, ari=True), None),
    DomainCase("renewals-in-history-are-exempt", 1, past(60, renewal=True), None),
    DomainCase("history-of-another-directory-is-ignored", 1, past(60, directory=LE_STAGING), None),
    DomainCase("history-under-another-registered-domain-is-ignored", 1, past(60, suffix="example.org"), None),
    DomainCase("staging-has-its-own-higher-limits", 60, past(60, directory=LE_STAGING), None, "le-staging"),
    DomainCase("non-letsencrypt-acme-is-never-counted", 60, past(60), None, "other-acme"),
    DomainCase("local-ca-is-never-counted", 60, past(60), None, "internal"),
]


@pytest.mark.parametrize("case", DOMAIN_CASES, ids=[case.id for case in DOMAIN_CASES])
def test_new_certificates_per_registered_domain(tmp_path: Path, case: DomainCase) -> None:
    desired = desired_with(tmp_path, certs(case.planned, issuer=case.issuer))
    plan = plan_for(desired, actual(issuances=case.history))
    assert plan.count(Action.ISSUE) == case.planned
    found = by_code(plan, CODE_REGISTERED_DOMAIN)
    if case.expected is None:
        assert plan.diagnostics == ()
        return
    assert [severity for severity, _ in found] == [case.expected]
    assert "example.com" in found[0][1]
    assert (plan.errors != ()) is (case.expected is Severity.ERROR)


def test_a_change_deferred_by_a_backoff_draws_on_no_budget(tmp_path: Path) -> None:
    """Apply skips a deferred change, so it cannot make apply refuse the changes that do run."""
    desired = desired_with(tmp_path, certs(1))
    history = actual(issuances=past(50))
    assert [severity for severity, _ in by_code(plan_for(desired, history), CODE_REGISTERED_DOMAIN)] == [Severity.ERROR]
    backoff = IssuanceBackoff(1, T0 - HOUR, T0 + HOUR, declaration_digest(desired, "c0"))
    plan = plan_for(desired, replace(history, backoffs={"c0": backoff}))
    assert [(c.action, c.deferred_until) for c in plan.changes] == [(Action.ISSUE, T0 + HOUR)]
    assert plan.errors == () and by_code(plan, CODE_REGISTERED_DOMAIN) == []


def test_the_error_names_the_domain_the_counts_and_what_to_do(tmp_path: Path) -> None:
    plan = plan_for(desired_with(tmp_path, certs(51)), actual())
    (error,) = plan.errors
    assert error.code == CODE_REGISTERED_DOMAIN
    assert "51 new certificates for example.com" in error.summary
    assert "0 in the last 7 days + 51 planned: c0, c1, c10, c11, c12 and 46 more" in error.summary
    assert "the limit is 50 per registered domain per week" in error.summary
    assert "split the change over several weeks" in error.hint
    assert "letsencrypt-staging" in error.hint


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("example.com", "example.com"),
        ("www.shop.example.com", "example.com"),
        ("*.a.example.co.uk", "example.co.uk"),
        ("new.blog.example.co.uk", "example.co.uk"),
        ("co.uk", "co.uk"),
        ("www.xn--mnchen-3ya.de", "xn--mnchen-3ya.de"),  # münchen.de
        ("shop.xn--80ak6aa92e.xn--p1ai", "xn--80ak6aa92e.xn--p1ai"),  # an .рф name
        ("*.project.github.io", "project.github.io"),  # private section: each project is its own
        ("a.b.service.internal", "service.internal"),  # unknown suffix: one label past it
    ],
)
def test_registered_domain(name: str, expected: str) -> None:
    assert registered_domain(name) == expected


def test_wildcards_and_idn_names_count_under_their_registered_domain(tmp_path: Path) -> None:
    wildcard = {
        "name": "wild",
        "domains": ["*.a.example.co.uk", "b.example.co.uk"],
        "issuer": "le",
        "challenge": "dns-01",
        "dns_provider": "corp",
        "targets": ["deploy"],
    }
    idn = {"name": "muenchen", "domains": ["www.münchen.de"], "issuer": "le", "targets": ["deploy"]}
    desired = desired_with(tmp_path, [wildcard, idn])
    history = (*past(49, suffix="x.example.co.uk"), *past(50, suffix="xn--mnchen-3ya.de"))
    plan = plan_for(desired, actual(issuances=history))
    found = by_code(plan, CODE_REGISTERED_DOMAIN)
    assert [severity for severity, _ in found] == [Severity.WARNING, Severity.ERROR]
    assert "example.co.uk to 50 of 50" in found[0][1]  # the two names of `wild` count once
    assert "51 new certificates for xn--mnchen-3ya.de" in found[1][1]


def test_a_certificate_counts_once_for_each_registered_domain(tmp_path: Path) -> None:
    both = {"name": "both", "domains": ["a.example.com", "a.example.org"], "issuer": "le", "targets": ["deploy"]}
    desired = desired_with(tmp_path, [both])
    plan = plan_for(desired, actual(issuances=(*past(50), *past(50, suffix="example.org"))))
    assert [s for s, _ in by_code(plan, CODE_REGISTERED_DOMAIN)] == [Severity.ERROR, Severity.ERROR]


# --- rotations: renewals and ARI -----------------------------------------------------------

SHOP = ("shop.example.com", "www.shop.example.com")


def shop_desired(tmp_path: Path, domains: tuple[str, ...] = SHOP) -> DesiredState:
    return desired_with(tmp_path, [{"name": "shop", "domains": list(domains), "issuer": "le", "targets": ["deploy"]}])


def test_a_renewal_does_not_count_per_registered_domain(tmp_path: Path) -> None:
    plan = plan_for(shop_desired(tmp_path), actual(current("shop", SHOP), issuances=past(50)))
    assert [c.action for c in plan.changes] == [Action.ROTATE]
    assert plan.diagnostics == ()


def test_a_rotation_that_changes_the_names_counts_as_new(tmp_path: Path) -> None:
    desired = shop_desired(tmp_path, (*SHOP, "api.shop.example.com"))
    plan = plan_for(desired, actual(current("shop", SHOP), issuances=past(50)))
    assert [d.code for d in plan.errors] == [CODE_REGISTERED_DOMAIN]


def test_a_rotation_away_from_another_ca_counts_as_new(tmp_path: Path) -> None:
    plan = plan_for(shop_desired(tmp_path), actual(current("shop", SHOP, issuer="internal"), issuances=past(50)))
    assert [d.code for d in plan.errors] == [CODE_REGISTERED_DOMAIN]


def test_an_ari_renewal_inside_its_window_is_exempt_from_every_limit(tmp_path: Path) -> None:
    window = RenewalWindow(T0 - HOUR, T0 + DAY)
    exact = tuple(PastIssuance(LE, frozenset(SHOP), T0 - DAY, False, True) for _ in range(5))
    orders = tuple(PastOrder(LE, T0 - HOUR) for _ in range(300))
    state = actual(current("shop", SHOP, renewal_window=window), issuances=(*past(50), *exact), orders=orders)
    desired = shop_desired(tmp_path, (*SHOP, "api.shop.example.com"))
    plan = plan_for(desired, state)
    assert [c.action for c in plan.changes] == [Action.ROTATE]
    assert plan.diagnostics == ()
    # Before the window opens, the same rotation (domains changed) cannot count on ARI.
    early = replace(
        state, certificates={"shop": current("shop", SHOP, renewal_window=RenewalWindow(T0 + HOUR, T0 + DAY))}
    )
    assert {d.code for d in plan_for(desired, early).errors} == {CODE_REGISTERED_DOMAIN, CODE_NEW_ORDERS}


# --- per exact set of names ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("duplicates", "ari", "expected"),
    [
        (2, False, None),
        (3, False, Severity.WARNING),  # 3 + 1 planned = 4 of 5: 80 %
        (4, False, Severity.WARNING),  # 5 of 5: at the limit
        (5, False, Severity.ERROR),
        (5, True, None),  # ARI renewals are exempt
    ],
    ids=["2+1-quiet", "3+1-warns", "4+1-warns", "5+1-errors", "ari-history-exempt"],
)
def test_certificates_per_exact_set(tmp_path: Path, duplicates: int, ari: bool, expected: Severity | None) -> None:
    history = tuple(
        PastIssuance(LE, frozenset(SHOP), T0 - (i + 1) * HOUR, ari_renewal=ari, renewal=i > 0)
        for i in range(duplicates)
    )
    plan = plan_for(shop_desired(tmp_path), actual(current("shop", SHOP), issuances=history))
    found = by_code(plan, CODE_EXACT_SET)
    assert [severity for severity, _ in found] == ([] if expected is None else [expected])
    if found:
        assert "shop.example.com, www.shop.example.com" in found[0][1]


# --- per account -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("orders", "expected"),
    [
        ((PastOrder(LE, T0 - HOUR),) * 238, None),
        ((PastOrder(LE, T0 - HOUR),) * 239, Severity.WARNING),  # 239 + 1 = 240: 80 %
        ((PastOrder(LE, T0 - HOUR),) * 299, Severity.WARNING),
        ((PastOrder(LE, T0 - HOUR),) * 300, Severity.ERROR),
        ((PastOrder(LE, T0 - 4 * HOUR),) * 300, None),  # outside the 3 hours
        ((PastOrder(LE, T0 - HOUR, ari_renewal=True),) * 300, None),  # ARI renewals are exempt
        ((PastOrder(LE_STAGING, T0 - HOUR),) * 300, None),  # another account
    ],
    ids=["238+1", "239+1-warns", "299+1-warns", "300+1-errors", "older-than-3h", "ari-exempt", "other-account"],
)
def test_new_orders_per_account(tmp_path: Path, orders: tuple[PastOrder, ...], expected: Severity | None) -> None:
    plan = plan_for(desired_with(tmp_path, certs(1)), actual(orders=orders))
    found = by_code(plan, CODE_NEW_ORDERS)
    assert [severity for severity, _ in found] == ([] if expected is None else [expected])
    if expected is Severity.ERROR:
        assert "301 new orders" in found[0][1] and "300 per account per 3 hours" in found[0][1]


def test_301_new_names_over_many_domains_hit_the_account_limit_only(tmp_path: Path) -> None:
    desired = desired_with(tmp_path, [c for i in range(7) for c in certs(43, suffix=f"d{i}.example", prefix=f"d{i}c")])
    plan = plan_for(desired, actual())
    assert plan.count(Action.ISSUE) == 301
    assert [d.code for d in plan.errors] == [CODE_NEW_ORDERS]
    assert {d.code for d in plan.diagnostics if d.severity is Severity.WARNING} == {CODE_REGISTERED_DOMAIN}


# --- the directory and the plan as a whole ---------------------------------------------------


@pytest.mark.parametrize(
    ("url", "production"),
    [
        (LE, True),
        ("https://ACME-V02.api.letsencrypt.org/directory", True),
        (LE_STAGING, False),
        ("https://acme.internal.example/directory", None),
        ("https://letsencrypt.org.evil.example/directory", None),
        (None, None),
    ],
)
def test_letsencrypt_is_told_by_the_directory_host(url: str | None, production: bool | None) -> None:
    limits = letsencrypt_limits(url)
    assert (limits.production if limits is not None else None) is production


def test_the_budgets_are_deterministic_and_survive_json(tmp_path: Path) -> None:
    from certreconcile.plan import plan_from_json

    desired = desired_with(tmp_path, certs(51))
    first, second = plan_for(desired, actual()), plan_for(desired, actual())
    assert first.dumps() == second.dumps()
    import json

    assert plan_from_json(json.loads(first.dumps())).diagnostics == first.diagnostics


def test_apply_refuses_a_plan_over_budget_before_anything_happens(tmp_path: Path) -> None:
    desired = desired_with(tmp_path, certs(51))
    clock = FixedClock(T0)
    store = InMemoryStore(clock=clock)
    with store.session() as session:
        plan = build_plan(desired, session.load_actual(), Observations(), T0)
    env = ApplyEnvironment(store=store, kms=FakeKms(), issuers={}, targets={}, clock=clock, actor="test")
    with pytest.raises(ApplyError) as raised:
        apply_plan(plan, desired, env)
    assert raised.value.code == CODE_REGISTERED_DOMAIN
    assert "apply refused, nothing was changed" in raised.value.message
    assert "51 new certificates for example.com" in raised.value.message
    with store.session() as session:
        assert session.load_actual().certificates == {}
        assert session.meta().serial == 0
        assert session.audit_events() == []


# --- pacing (`run`): what fits now, most urgent first -----------------------------------------


def test_within_budget_keeps_the_most_urgent_renewals_and_holds_the_rest(tmp_path: Path) -> None:
    from certreconcile.plan.budget import draws_on_budgets, within_budget

    desired = desired_with(tmp_path, certs(3))
    # three renewals due (no ARI window: each counts once against the account's 300 orders per 3 hours)
    state = actual(
        current("c0", ("c0.example.com",), not_after=T0 + 9 * DAY),
        current("c1", ("c1.example.com",), not_after=T0 + 3 * DAY),
        current("c2", ("c2.example.com",), not_after=T0 + 5 * DAY),
        orders=tuple(PastOrder(LE, T0 - HOUR, False) for _ in range(298)),
    )
    plan = plan_for(desired, state)
    assert plan.count(Action.ROTATE) == 3 and [d.code for d in plan.errors] == [CODE_NEW_ORDERS]
    kept, held = within_budget(desired, state, plan.changes, T0)
    assert [c.name for c in kept] == ["c1", "c2"]  # the two expiring soonest fill the 2 orders left
    assert [c.name for c in held] == ["c0"]
    assert len(draws_on_budgets(desired, state, plan.changes, T0)) == 3


def test_within_budget_never_holds_an_ari_renewal_back(tmp_path: Path) -> None:
    from certreconcile.plan.budget import within_budget

    desired = desired_with(tmp_path, certs(2))
    window = RenewalWindow(T0 - DAY, T0 + DAY, None)
    state = actual(
        current("c0", ("c0.example.com",), renewal_window=window),
        current("c1", ("c1.example.com",)),
        orders=tuple(PastOrder(LE, T0 - HOUR, False) for _ in range(300)),  # the account's budget is spent
    )
    kept, held = within_budget(desired, state, plan_for(desired, state).changes, T0)
    assert [c.name for c in kept] == ["c0"] and [c.name for c in held] == ["c1"]
