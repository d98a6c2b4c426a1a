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

from certreconcile.actual.model import ActualState, RenewalWindow
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


def refresh_renewal_info(
    actual: ActualState, issuers: Mapping[str, Issuer], store: StateStore, now: datetime, *, persist: bool
) -> RenewalInfoRefresh:
    windows: dict[str, RenewalWindow] = {}
    warnings: list[str] = []
    answers: list[RenewalInfoRecord] = []  # to store (persist)
    asked = 0
    with store.session() as session:
        for name, current in actual.certificates.items():
            issuer = issuers.get(current.issuer)
            if issuer is None or not hasattr(issuer, "renewal_info") or current.status not in _LIVE:
                continue
            if current.not_after <= now:
                continue  # RFC 9773 §4.3: never ask about an expired certificate
            window = current.renewal_window
            if window is not None and window.retry_after is not None:
                if window.retry_after > now:
                    continue  # the CA asked us to wait; the stored window stands (read with the state: no query)
            elif (stored := session.renewal_info(current.id)) is not None and stored.retry_after > now:
                continue
            cert_pem = session.certificate_pems(current.id)[0]
            asked += 1
            try:
                info = _ari(issuer).renewal_info(cert_pem, now)
            except CertReconcileError as exc:
                warnings.append(f"{name}: renewal info (ARI) unavailable, the declared renewal window applies: "
                                f"{exc.one_line()}")  # fmt: skip
                continue
            if info is None:
                continue
            windows[name] = RenewalWindow(info.window_start, info.window_end, info.retry_after)
            if persist:
                answers.append(
                    RenewalInfoRecord(
                        cert_id=current.id,
                        window_start=info.window_start,
                        window_end=info.window_end,
                        retry_after=info.retry_after,
                        fetched_at=now,
                        explanation_url=info.explanation_url,
                    )
                )
        if answers:  # one transaction for all (a commit each cost more than the questions), none open while asking
            with session.transaction():
                for record in answers:
                    session.save_renewal_info(record)
    if not windows:
        return RenewalInfoRefresh(actual=actual, asked=asked, warnings=tuple(warnings))
    certificates = {
        name: replace(current, renewal_window=windows[name]) if name in windows else current
        for name, current in actual.certificates.items()
    }
    return RenewalInfoRefresh(actual=replace(actual, certificates=certificates), asked=asked, warnings=tuple(warnings))


def _ari(issuer: Issuer) -> SupportsRenewalInfo:
    assert hasattr(issuer, "renewal_info")
    return issuer  # type: ignore[return-value]  # checked structurally above
