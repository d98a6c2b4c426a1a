"""Let's Encrypt rate-limit budgets of a plan. Pure: counts what the actual state and the plan hold.

For each Let's Encrypt directory (production or staging, told apart by host), three sliding
windows are counted, each as the CA's recent history (``ActualState.issuance_history``,
measured back from ``now``) plus what this plan would order:

* new certificates per registered domain (Public Suffix List), 7 days: a certificate counts
  once for every registered domain among its names;
* certificates per exact set of names, 7 days;
* new orders per account (one account per directory), 3 hours.

What is exempt (the rule, as Let's Encrypt documents it):

* an ARI renewal (RFC 9773 ``replaces``) is exempt from every limit. In the history, that is
  a certificate whose order was accepted as a replacement (``Certificate.ari_replaces``). In
  the plan, a rotation counts as one only when it is certain to send ``replaces``: same
  issuer, the CA offered a renewal window for the current certificate (so it speaks ARI),
  and that window has opened. Any other rotation counts in full;
* a renewal (the same exact set of names as an earlier certificate of the same directory)
  does not count per registered domain; it still counts per exact set and per account. In
  the history: an earlier certificate of the same issuer had exactly those names. In the
  plan: a rotation whose current certificate came from the same directory for the same names.

A budget at 80 % or more of a limit is a warning; past the limit it is an error, and apply
refuses the plan. Only budgets this plan draws on are reported; a change deferred by a
backoff draws on none (apply skips it).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from urllib.parse import urlsplit

from certreconcile.actual.model import HISTORY_ORDERS_WINDOW, HISTORY_WINDOW, ActualCertificate, ActualState
from certreconcile.desired.model import DesiredState
from certreconcile.domain.names import registered_domain
from certreconcile.plan.plan import Action, Change, PlanDiagnostic, Severity

__all__ = [
    "CODE_EXACT_SET",
    "CODE_NEW_ORDERS",
    "CODE_REGISTERED_DOMAIN",
    "LETSENCRYPT_PRODUCTION",
    "LETSENCRYPT_STAGING",
    "RATE_LIMIT_CODES",
    "RateLimits",
    "acme_directory",
    "draws_on_budgets",
    "letsencrypt_limits",
    "rate_limit_diagnostics",
    "within_budget",
]

CODE_REGISTERED_DOMAIN = "rate-limit-registered-domain"
CODE_EXACT_SET = "rate-limit-exact-set"
CODE_NEW_ORDERS = "rate-limit-new-orders"
#: Every diagnostic code :func:`rate_limit_diagnostics` gives (``subplan`` recounts them).
RATE_LIMIT_CODES = frozenset({CODE_REGISTERED_DOMAIN, CODE_EXACT_SET, CODE_NEW_ORDERS})

#: Warn from this share of a limit on.
WARNING_SHARE = 0.8
#: How many certificate names a diagnostic lists before "and N more".
NAMES_SHOWN = 5


@dataclass(frozen=True, slots=True)
class RateLimits:
    label: str  # for people: which CA environment
    per_registered_domain: int  # new certificates per registered domain per 7 days
    per_exact_set: int  # certificates per exact set of names per 7 days
    orders_per_account: int  # new orders per account per 3 hours
    production: bool


LETSENCRYPT_PRODUCTION = RateLimits("Let's Encrypt", 50, 5, 300, production=True)
LETSENCRYPT_STAGING = RateLimits("Let's Encrypt staging", 30000, 30000, 1500, production=False)
_LETSENCRYPT_HOSTS = {
    "acme-v02.api.letsencrypt.org": LETSENCRYPT_PRODUCTION,
    "acme-staging-v02.api.letsencrypt.org": LETSENCRYPT_STAGING,
}


def letsencrypt_limits(directory_url: str | None) -> RateLimits | None:
    """The published limits of a Let's Encrypt directory; None for any other CA."""
    if not directory_url:
        return None
    return _limits_of_directory(directory_url)


@lru_cache(maxsize=64)
def _limits_of_directory(directory_url: str) -> RateLimits | None:  # a few directories, asked once per change
    return _LETSENCRYPT_HOSTS.get((urlsplit(directory_url).hostname or "").lower())


def acme_directory(desired: DesiredState, issuer_name: str | None) -> str | None:
    """The directory URL of a declared ACME issuer (presets resolved); None for any other issuer."""
    spec = desired.issuers.get(issuer_name) if issuer_name is not None else None
    directory_url = getattr(spec.config, "directory_url", None) if spec is not None and spec.kind == "acme" else None
    return directory_url if isinstance(directory_url, str) else None


@dataclass(slots=True)
class _Counter:
    """One budget: what history already used, and which changes of the plan draw on it."""

    used: int = 0
    planned: list[str] = field(default_factory=list)  # certificate names

    @property
    def total(self) -> int:
        return self.used + len(self.planned)


@dataclass(slots=True)
class _Budgets:
    per_domain: defaultdict[str, _Counter] = field(default_factory=lambda: defaultdict(_Counter))
    per_set: defaultdict[frozenset[str], _Counter] = field(default_factory=lambda: defaultdict(_Counter))
    orders: _Counter = field(default_factory=_Counter)


def _registered_domains(domains: Iterable[str]) -> set[str]:
    return {registered_domain(domain) for domain in domains}


def rate_limit_diagnostics(
    desired: DesiredState, actual: ActualState, changes: Iterable[Change], now: datetime
) -> tuple[PlanDiagnostic, ...]:
    """Warnings and errors for every Let's Encrypt budget the ``changes`` draw on, in a stable order."""
    budgets = _planned_draws(desired, actual, changes, now)
    if not budgets:
        return ()
    _count_history(budgets, actual, now)
    diagnostics: list[PlanDiagnostic | None] = []
    for directory in sorted(budgets):
        limits = letsencrypt_limits(directory)
        assert limits is not None
        budget = budgets[directory]
        for domain in sorted(budget.per_domain):
            diagnostics.append(_registered_domain_diagnostic(limits, domain, budget.per_domain[domain]))
        for names in sorted(budget.per_set, key=sorted):
            diagnostics.append(_exact_set_diagnostic(limits, names, budget.per_set[names]))
        diagnostics.append(_orders_diagnostic(limits, directory, budget.orders))
    return tuple(diagnostic for diagnostic in diagnostics if diagnostic is not None)


@dataclass(frozen=True, slots=True)
class _Draw:
    """What one change of the plan takes from the budgets of its Let's Encrypt directory."""

    directory: str
    names: frozenset[str]
    registered_domains: tuple[str, ...]  # empty for a renewal (same names, same directory)


def _draw(desired: DesiredState, actual: ActualState, change: Change, now: datetime) -> _Draw | None:
    """The budgets ``change`` draws on; None when it draws on none (not an order at Let's Encrypt,
    deferred, or an ARI renewal)."""
    if change.action not in (Action.ISSUE, Action.ROTATE) or change.deferred_until is not None:
        return None  # a deferred change orders nothing in this apply (it waits for its backoff)
    directory = acme_directory(desired, change.issuer)
    if directory is None or letsencrypt_limits(directory) is None:
        return None
    current = actual.certificates.get(change.name)
    if _ari_renewal(change, current, now):
        return None
    names = frozenset(change.domains)
    renewal = (
        change.action is Action.ROTATE
        and current is not None
        and acme_directory(desired, current.issuer) == directory
        and frozenset(current.domains) == names
    )
    return _Draw(directory, names, () if renewal else tuple(sorted(_registered_domains(names))))


def _add(budgets: dict[str, _Budgets], draw: _Draw, name: str) -> None:
    budget = budgets.setdefault(draw.directory, _Budgets())
    budget.orders.planned.append(name)
    budget.per_set[draw.names].planned.append(name)
    for domain in draw.registered_domains:
        budget.per_domain[domain].planned.append(name)


def _planned_draws(
    desired: DesiredState, actual: ActualState, changes: Iterable[Change], now: datetime
) -> dict[str, _Budgets]:
    """The budgets, per Let's Encrypt directory, that the changes of this plan draw on."""
    budgets: dict[str, _Budgets] = {}
    for change in changes:
        draw = _draw(desired, actual, change, now)
        if draw is not None:
            _add(budgets, draw, change.name)
    return budgets


def _fits(budgets: dict[str, _Budgets], draw: _Draw) -> bool:
    """Would one more order of ``draw`` keep every budget it draws on within its limit?"""
    limits = letsencrypt_limits(draw.directory)
    assert limits is not None
    budget = budgets[draw.directory]
    return (
        budget.orders.total < limits.orders_per_account
        and budget.per_set[draw.names].total < limits.per_exact_set
        and all(budget.per_domain[domain].total < limits.per_registered_domain for domain in draw.registered_domains)
    )


def draws_on_budgets(
    desired: DesiredState, actual: ActualState, changes: Iterable[Change], now: datetime
) -> tuple[Change, ...]:
    """The changes that draw on a Let's Encrypt budget (the others are never held back)."""
    return tuple(change for change in changes if _draw(desired, actual, change, now) is not None)


def within_budget(
    desired: DesiredState, actual: ActualState, changes: Sequence[Change], now: datetime
) -> tuple[tuple[Change, ...], tuple[Change, ...]]:
    """The changes that fit the Let's Encrypt budgets now, and the ones to hold back for a later cycle.

    ``run`` paces with this where ``apply`` refuses: the changes are taken most urgent first (the
    certificate expiring soonest; new certificates last, by name), each while every budget it draws
    on stays within its limit; the changes drawing on no budget (ARI renewals, other CAs) are all kept.
    The kept changes keep their order in the plan.
    """
    draws = {change.name: _draw(desired, actual, change, now) for change in changes}
    budgets: dict[str, _Budgets] = {}
    for draw in draws.values():  # every budget drawn on, empty: the history, then the changes one by one
        if draw is not None:
            budget = budgets.setdefault(draw.directory, _Budgets())
            budget.per_set.setdefault(draw.names, _Counter())
            for domain in draw.registered_domains:
                budget.per_domain.setdefault(domain, _Counter())
    if not budgets:
        return tuple(changes), ()
    _count_history(budgets, actual, now)
    held: set[str] = set()
    for change in sorted(changes, key=lambda c: _urgency(actual, c)):
        draw = draws[change.name]
        if draw is None:
            continue
        if _fits(budgets, draw):
            _add(budgets, draw, change.name)
        else:
            held.add(change.name)
    return (
        tuple(change for change in changes if change.name not in held),
        tuple(change for change in changes if change.name in held),
    )


def _urgency(actual: ActualState, change: Change) -> tuple[int, datetime, str]:
    current = actual.certificates.get(change.name)
    if current is None:
        return (1, datetime.max.replace(tzinfo=UTC), change.name)
    return (0, current.not_after, change.name)


def _ari_renewal(change: Change, current: ActualCertificate | None, now: datetime) -> bool:
    """A renewal inside the CA's ARI window: exempt from every limit."""
    return (
        change.action is Action.ROTATE
        and current is not None
        and current.issuer == change.issuer
        and current.renewal_window is not None
        and now >= current.renewal_window.start
    )


def _count_history(budgets: dict[str, _Budgets], actual: ActualState, now: datetime) -> None:
    """Add what the recent issuances and orders at each directory already used."""
    history = actual.issuance_history
    week_start, orders_start = now - HISTORY_WINDOW, now - HISTORY_ORDERS_WINDOW
    for past in history.issuances:
        drawn = budgets.get(past.directory_url)
        if drawn is None or past.ari_renewal or past.created_at <= week_start:
            continue
        if past.domains in drawn.per_set:
            drawn.per_set[past.domains].used += 1
        if not past.renewal:
            for domain in _registered_domains(past.domains):
                if domain in drawn.per_domain:
                    drawn.per_domain[domain].used += 1
    for order in history.orders:
        drawn = budgets.get(order.directory_url)
        if drawn is not None and not order.ari_renewal and order.created_at > orders_start:
            drawn.orders.used += 1


def _severity(total: int, limit: int) -> Severity | None:
    if total > limit:
        return Severity.ERROR
    if total >= limit * WARNING_SHARE:
        return Severity.WARNING
    return None


def _names(counter: _Counter) -> str:
    shown = sorted(counter.planned)[:NAMES_SHOWN]
    more = len(counter.planned) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more else "")


def _staging_hint(limits: RateLimits) -> str:
    return "; to test, use the letsencrypt-staging directory" if limits.production else ""


def _registered_domain_diagnostic(limits: RateLimits, domain: str, counter: _Counter) -> PlanDiagnostic | None:
    limit = limits.per_registered_domain
    severity = _severity(counter.total, limit)
    if severity is None:
        return None
    counts = f"{counter.used} in the last 7 days + {len(counter.planned)} planned: {_names(counter)}"
    if severity is Severity.ERROR:
        summary = (
            f"{limits.label} rate limit: this plan would make {counter.total} new certificates for {domain}"
            f" within 7 days ({counts}); the limit is {limit} per registered domain per week"
        )
        hint = (
            f"split the change over several weeks (declare at most {max(limit - counter.used, 0)} new"
            f" certificates for {domain} now), or put more names in fewer certificates{_staging_hint(limits)}"
        )
    else:
        summary = (
            f"{limits.label} rate limit: this plan would bring {domain} to {counter.total} of {limit}"
            f" new certificates per registered domain per week ({counts})"
        )
        hint = f"past {limit}, apply refuses the plan; keep room for retries and for new names"
    return PlanDiagnostic(severity, CODE_REGISTERED_DOMAIN, summary, hint)


def _exact_set_diagnostic(limits: RateLimits, names: frozenset[str], counter: _Counter) -> PlanDiagnostic | None:
    limit = limits.per_exact_set
    severity = _severity(counter.total, limit)
    if severity is None:
        return None
    shown = ", ".join(sorted(names)[:NAMES_SHOWN]) + (
        f" and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else ""
    )
    counts = f"{counter.used} in the last 7 days + {len(counter.planned)} planned: {_names(counter)}"
    if severity is Severity.ERROR:
        summary = (
            f"{limits.label} rate limit: this plan would make {counter.total} certificates for exactly"
            f" [{shown}] within 7 days ({counts}); the limit is {limit} per exact set of names per week"
        )
        hint = (
            "wait until older certificates for these names leave the 7-day window,"
            " or find out what keeps re-issuing them"
        )
    else:
        summary = (
            f"{limits.label} rate limit: this plan would bring the set [{shown}] to {counter.total} of {limit}"
            f" certificates per exact set of names per week ({counts})"
        )
        hint = f"past {limit}, apply refuses the plan"
    return PlanDiagnostic(severity, CODE_EXACT_SET, summary, hint)


def _orders_diagnostic(limits: RateLimits, directory: str, counter: _Counter) -> PlanDiagnostic | None:
    limit = limits.orders_per_account
    severity = _severity(counter.total, limit)
    if severity is None:
        return None
    counts = f"{counter.used} in the last 3 hours + {len(counter.planned)} planned"
    if severity is Severity.ERROR:
        summary = (
            f"{limits.label} rate limit: this plan would place {counter.total} new orders with the account of"
            f" {directory} within 3 hours ({counts}); the limit is {limit} per account per 3 hours"
        )
        hint = f"apply in batches of at most {limit} new certificates, 3 hours apart{_staging_hint(limits)}"
    else:
        summary = (
            f"{limits.label} rate limit: this plan would bring the account of {directory} to {counter.total} of"
            f" {limit} new orders per 3 hours ({counts})"
        )
        hint = f"past {limit}, apply refuses the plan"
    return PlanDiagnostic(severity, CODE_NEW_ORDERS, summary, hint)
