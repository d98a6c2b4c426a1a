"""ACME Renewal Information (RFC 9773): ask the CA when to renew, before planning.

The planner is pure: it reads the windows from the actual state. This module gathers them:
``apply`` (and ``run``) ask the CA for every live certificate of an ARI-capable issuer whose
stored answer's ``Retry-After`` has passed, and persist the answer; ``plan --refresh`` asks
too but writes nothing (plan runs read-only). A CA that fails to answer is a warning, never
an error: without a window, the declared renewal window applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from certreconcile.actual.model import ActualCertificate, ActualState, RenewalWindow
from certreconcile.actual.store import RenewalInfoRecord, StateStore
from certreconcile.domain.status import CertStatus
from certreconcile.errors import CertReconcileError
from certreconcile.plugins.ports import Issuer, SupportsRenewalInfo

__all__ = ["RenewalInfoRefresh", "refresh_renewal_info"]

_LIVE = frozenset({CertStatus.ISSUED, CertStatus.ACTIVE, CertStatus.EXPIRING_SOON})


@dataclass(frozen=True, slots=True)
class RenewalInfoRefresh:
    actual: ActualState  # with the fresh windows in place
    asked: int  # how many certificates the CAs were asked about
    warnings: tuple[str, ...] = ()


#: After this many failures in a row, an issuer is not asked again in this refresh (a CA that is down
#: is not sent one question per certificate every cycle); the others are asked at the next one.
FAILURES_BEFORE_GIVING_UP = 3
#: How many certificates' PEMs one query reads.
PEM_BATCH = 1000


def refresh_renewal_info(
    actual: ActualState, issuers: Mapping[str, Issuer], store: StateStore, now: datetime, *, persist: bool
) -> RenewalInfoRefresh:
    due = _due(actual, issuers, store, now)
    if not due:
        return RenewalInfoRefresh(actual=actual, asked=0)
    windows: dict[str, RenewalWindow] = {}
    warnings: list[str] = []
    answers: list[RenewalInfoRecord] = []  # to store (persist)
    asked = 0
    failures: dict[str, int] = {}  # issuer -> failures in a row
    skipped: dict[str, int] = {}  # issuer -> certificates not asked after giving up
    with store.session() as session:
        for chunk in _chunks(due, PEM_BATCH):
            pems = session.leaf_pems([current.id for current in chunk])
            for current in chunk:
                if failures.get(current.issuer, 0) >= FAILURES_BEFORE_GIVING_UP:
                    skipped[current.issuer] = skipped.get(current.issuer, 0) + 1
                    continue
                cert_pem = pems.get(current.id)
                if cert_pem is None:
                    continue  # gone since the state was read
                asked += 1
                try:
                    info = _ari(issuers[current.issuer]).renewal_info(cert_pem, now)
                except CertReconcileError as exc:
                    failures[current.issuer] = failures.get(current.issuer, 0) + 1
                    warnings.append(f"{current.name}: renewal info (ARI) unavailable, the declared renewal window"
                                    f" applies: {exc.one_line()}")  # fmt: skip
                    continue
                failures[current.issuer] = 0
                if info is None:
                    continue
                windows[current.name] = RenewalWindow(info.window_start, info.window_end, info.retry_after)
                if persist:
                    answers.append(RenewalInfoRecord(current.id, info.window_start, info.window_end,
                                                     info.retry_after, now, info.explanation_url))  # fmt: skip
        if answers:  # one transaction for all (a commit each cost more than the questions), none open while asking
            session.save_renewal_infos(answers)
    warnings += [
        f"issuer {issuer}: not asked about {count} more certificate{'s' if count != 1 else ''} (ARI) after"
        f" {FAILURES_BEFORE_GIVING_UP} failures in a row; asked again at the next refresh"
        for issuer, count in sorted(skipped.items())
    ]
    if not windows:
        return RenewalInfoRefresh(actual=actual, asked=asked, warnings=tuple(warnings))
    certificates = {
        name: replace(current, renewal_window=windows[name]) if name in windows else current
        for name, current in actual.certificates.items()
    }
    return RenewalInfoRefresh(actual=replace(actual, certificates=certificates), asked=asked, warnings=tuple(warnings))


def _due(
    actual: ActualState, issuers: Mapping[str, Issuer], store: StateStore, now: datetime
) -> list[ActualCertificate]:
    """The live certificates of ARI-capable issuers whose CA may be asked again now."""
    due: list[ActualCertificate] = []
    unknown: list[ActualCertificate] = []  # a window without its Retry-After: the stored answer says
    for current in actual.certificates.values():
        issuer = issuers.get(current.issuer)
        if issuer is None or not hasattr(issuer, "renewal_info") or current.status not in _LIVE:
            continue
        if current.not_after <= now:
            continue  # RFC 9773 §4.3: never ask about an expired certificate
        window = current.renewal_window
        if window is None:
            due.append(current)  # never answered (the stored answers come with the state)
        elif window.retry_after is None:
            unknown.append(current)
        elif window.retry_after <= now:
            due.append(current)  # else the CA asked us to wait; the stored window stands
    if unknown:
        with store.session() as session:
            for current in unknown:
                stored = session.renewal_info(current.id)
                if stored is None or stored.retry_after <= now:
                    due.append(current)
    return due


def _chunks(items: list[ActualCertificate], size: int) -> list[list[ActualCertificate]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def _ari(issuer: Issuer) -> SupportsRenewalInfo:
    assert hasattr(issuer, "renewal_info")
    return issuer  # type: ignore[return-value]  # checked structurally above
