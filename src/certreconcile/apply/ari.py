"""ACME Renewal Information (RFC 9773): ask the CA when to renew, before planning.

The planner is pure: it reads the windows from the actual state. This module gathers them:
``apply`` (and ``run``) ask the CA for every live certificate of an ARI-capable issuer whose
stored answer's ``Retry-After`` has passed, and persist the answer; ``plan --refresh`` asks
too but writes nothing (plan runs read-only). A CA that fails to answer is a warning, never
an error: without a window, the declared renewal window applies.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime

from certreconcile.actual.model import ActualCertificate, ActualState, RenewalWindow
from certreconcile.actual.store import RenewalInfoRecord, StateSession, StateStore
from certreconcile.domain.records import slot_replacer
from certreconcile.domain.status import CertStatus
from certreconcile.errors import CertReconcileError
from certreconcile.plugins.ports import Issuer, RenewalInfo, SupportsRenewalInfo

__all__ = ["RenewalInfoRefresh", "in_flight", "refresh_renewal_info"]

_LIVE = frozenset({CertStatus.ISSUED, CertStatus.ACTIVE, CertStatus.EXPIRING_SOON})
_with_window = slot_replacer(ActualCertificate, "renewal_window")


@dataclass(frozen=True, slots=True)
class RenewalInfoRefresh:
    actual: ActualState  # with the fresh windows in place
    asked: int  # how many certificates the CAs were asked about
    warnings: tuple[str, ...] = ()
    # With ``defer_unchanged``: the store of the Retry-Afters of windows answered again, for the caller to run
    # (beside other work: no later step reads them but the next refresh); None when there are none.
    pending: Callable[[], None] | None = None


#: An answer slower than this (seconds) is a CA across a network: the refresh asks the rest in flight, when the
#: issuer takes several questions at once. Faster, the question's own CPU is the cost, which threads cannot
#: overlap (an ACME CA on this host: about 1.2 ms a question in turn, slower from 8 threads).
INLINE_BELOW = 0.003

#: After this many failures in a row, an issuer is not asked again in this refresh (a CA that is down
#: is not sent one question per certificate every cycle); the others are asked at the next one.
FAILURES_BEFORE_GIVING_UP = 3


def refresh_renewal_info(
    actual: ActualState,
    issuers: Mapping[str, Issuer],
    store: StateStore,
    now: datetime,
    *,
    persist: bool,
    leaf_cache: MutableMapping[str, str] | None = None,
    inline_below: float = INLINE_BELOW,
    defer_unchanged: bool = False,
) -> RenewalInfoRefresh:
    """Ask the CAs about the certificates whose window is due; a few queries in all, none per certificate.

    ``leaf_cache``: certificate id -> PEM, kept by a long-running caller (``run``) between refreshes: a
    stored certificate never changes, and a CA's Retry-After (6 hours at Let's Encrypt) has every
    certificate of a fleet asked about several times a day. Ids no longer in ``actual`` are dropped.
    ``inline_below``: an answer slower than this (seconds) has the rest asked in flight (see ``_Asking.ask_all``).
    ``defer_unchanged`` (with ``persist``): the new windows are stored here, the Retry-Afters of the windows
    answered again are left to the caller as ``pending`` (one UPDATE of every certificate of a quiet fleet, 30 ms
    at 10,000: ``engine.gather`` runs it while it probes the targets).
    """
    with store.session() as session:
        due = _due(actual, issuers, session, now)
        leaves = _leaves(session, [current.id for _, current in due], actual, leaf_cache) if due else {}
        asking = _Asking(issuers, now, inline_below)
        # a certificate whose PEM is not found: its row is gone since the state was read
        asking.ask_all([(name, current, leaf) for name, current in due if (leaf := leaves.get(current.id)) is not None])
        if persist:  # a few statements for all, no transaction open while asking
            _save(session, asking, now, unchanged=not defer_unchanged)
    pending = _unchanged_saver(store, asking.unchanged, now) if persist and defer_unchanged else None
    warnings = asking.warnings + [
        f"issuer {issuer}: not asked about {count} more certificate{'s' if count != 1 else ''} (ARI) after"
        f" {FAILURES_BEFORE_GIVING_UP} failures in a row; asked again at the next refresh"
        for issuer, count in sorted(asking.skipped.items())
    ]
    windows = asking.windows
    if not windows:
        return RenewalInfoRefresh(actual=actual, asked=asking.asked, warnings=tuple(warnings), pending=pending)
    certificates = {
        name: _with_window(current, windows[name]) if name in windows else current
        for name, current in actual.certificates.items()
    }
    refreshed = replace(actual, certificates=certificates)
    return RenewalInfoRefresh(actual=refreshed, asked=asking.asked, warnings=tuple(warnings), pending=pending)


class _Asking:
    """One refresh's questions: the answers, the warnings, and the issuers given up on after failures in a row."""

    def __init__(self, issuers: Mapping[str, Issuer], now: datetime, inline_below: float = INLINE_BELOW) -> None:
        self.issuers, self.now, self.inline_below = issuers, now, inline_below
        self.windows: dict[str, RenewalWindow] = {}
        self.answers: list[tuple[str, RenewalInfo]] = []  # (certificate id, the CA's answer): a new window
        self.unchanged: dict[datetime, list[str]] = {}  # Retry-After -> ids whose stored window the CA answered again
        self.warnings: list[str] = []
        self.asked = 0
        self.failures: dict[str, int] = {}  # issuer -> failures in a row (absent: none)
        self.skipped: dict[str, int] = {}  # issuer -> certificates not asked about after giving up
        self._askers: dict[str, Callable[[str, datetime], RenewalInfo | None]] = {}  # issuer -> its renewal_info

    def ask_all(self, questions: Sequence[tuple[str, ActualCertificate, str]]) -> None:
        """Ask about each (name, certificate, PEM), in turn; or, when an issuer takes questions in flight
        (:func:`in_flight`) and answers slower than ``inline_below`` (a CA across a network, not one on
        this host), the rest in waves of that many at once, the answers taken in order as if asked in turn.

        A wave is asked whole: an issuer that fails every question is given up on after the wave in which
        its third failure in a row falls (at most a wave's questions to a CA that is down, not every one).
        """
        width = max((in_flight(self.issuers[issuer]) for issuer in {current.issuer for _, current, _ in questions}),
                    default=1)  # fmt: skip
        asked = 0
        for name, current, leaf in questions:  # in turn while the answers come faster than a thread could help
            asked += 1
            if self._giving_up(current.issuer):
                continue
            began = time.perf_counter() if width > 1 else 0.0
            outcome = _asked(self._asker(current.issuer), leaf, self.now)
            slow = width > 1 and time.perf_counter() - began > self.inline_below
            self._take(name, current, outcome)
            if slow:
                break
        if asked == len(questions):
            return
        with ThreadPoolExecutor(max_workers=width, thread_name_prefix="ari") as pool:
            for first in range(asked, len(questions), width):
                wave = [item for item in questions[first : first + width] if not self._giving_up(item[1].issuer)]
                futures = [pool.submit(_asked, self._asker(item[1].issuer), item[2], self.now) for item in wave]
                for (name, current, _leaf), future in zip(wave, futures, strict=True):
                    self._take(name, current, future.result())

    def _giving_up(self, issuer: str) -> bool:
        """True (and the question counted as skipped) when the issuer failed too often in a row; else counted asked."""
        failures = self.failures.get(issuer)
        if failures is not None and failures >= FAILURES_BEFORE_GIVING_UP:
            self.skipped[issuer] = self.skipped.get(issuer, 0) + 1
            return True
        self.asked += 1
        return False

    def _asker(self, issuer: str) -> Callable[[str, datetime], RenewalInfo | None]:
        ask_ca = self._askers.get(issuer)
        if ask_ca is None:
            ask_ca = self._askers[issuer] = _ari(self.issuers[issuer]).renewal_info
        return ask_ca

    def _take(self, name: str, current: ActualCertificate, outcome: RenewalInfo | CertReconcileError | None) -> None:
        """Record one question's outcome: a failure (counted in a row), no window, or a window (new or again)."""
        issuer = current.issuer
        failures = self.failures.get(issuer)
        if isinstance(outcome, CertReconcileError):
            self.failures[issuer] = (failures or 0) + 1
            self.warnings.append(f"{name}: renewal info (ARI) unavailable, the declared renewal window applies: "
                                 f"{outcome.one_line()}")  # fmt: skip
            return
        if failures is not None:  # an answer ends the failures in a row
            del self.failures[issuer]
        if outcome is None:
            return
        info = outcome
        stored = current.renewal_window
        if (
            stored is not None
            and info.explanation_url is None
            and stored.start == info.window_start
            and stored.end == info.window_end
        ):  # the same window again (most answers): only its Retry-After moves, and the planner never reads it
            self.unchanged.setdefault(info.retry_after, []).append(current.id)
            return
        self.windows[name] = RenewalWindow(info.window_start, info.window_end, info.retry_after)
        self.answers.append((current.id, info))


def in_flight(issuer: Issuer) -> int:
    """How many renewal-info questions ``issuer`` takes at once: its ``renewal_info_in_flight`` (the ACME
    issuer's, whose every question is an HTTP GET that waits a round trip to the CA); 1 (in turn) without one."""
    width = getattr(issuer, "renewal_info_in_flight", 1)
    return width if isinstance(width, int) and width > 1 else 1


def _asked(
    ask_ca: Callable[[str, datetime], RenewalInfo | None], leaf: str, now: datetime
) -> RenewalInfo | CertReconcileError | None:
    """The CA's answer about ``leaf``, or the error it failed with (recorded by the caller, in order)."""
    try:
        return ask_ca(leaf, now)
    except CertReconcileError as exc:
        return exc


def _save(session: StateSession, asking: _Asking, now: datetime, *, unchanged: bool = True) -> None:
    """The new windows in one statement; with ``unchanged``, the windows answered again, one statement per
    Retry-After (usually one)."""
    if asking.answers:
        session.save_renewal_infos(
            [
                RenewalInfoRecord(
                    cert_id, info.window_start, info.window_end, info.retry_after, now, info.explanation_url
                )
                for cert_id, info in asking.answers
            ]
        )
    if unchanged:
        _save_unchanged(session, asking.unchanged, now)


def _save_unchanged(session: StateSession, unchanged: Mapping[datetime, Sequence[str]], now: datetime) -> None:
    for retry_after, cert_ids in unchanged.items():
        session.save_unchanged_renewal_infos(cert_ids, retry_after, now)


def _unchanged_saver(
    store: StateStore, unchanged: Mapping[datetime, Sequence[str]], now: datetime
) -> Callable[[], None] | None:
    """The deferred store of the windows answered again, on a session of its own (run from any thread)."""
    if not unchanged:
        return None

    def save() -> None:
        with store.session() as session:
            _save_unchanged(session, unchanged, now)

    return save


def _leaves(
    session: StateSession, ids: list[str], actual: ActualState, cache: MutableMapping[str, str] | None
) -> Mapping[str, str]:
    """The PEM of each certificate id: from ``cache`` when it has it, else in one query (and kept there)."""
    if cache is None:
        return session.leaf_pems(ids)
    missing = [cert_id for cert_id in ids if cert_id not in cache]
    if missing:
        cache.update(session.leaf_pems(missing))
    if len(cache) > 2 * len(actual.certificates) + 64:  # replaced certificates: forget them
        live = {current.id for current in actual.certificates.values()}
        for cert_id in [cert_id for cert_id in cache if cert_id not in live]:
            del cache[cert_id]
    return cache


def _due(
    actual: ActualState, issuers: Mapping[str, Issuer], session: StateSession, now: datetime
) -> list[tuple[str, ActualCertificate]]:
    """The live certificates of ARI-capable issuers whose stored answer's ``Retry-After`` has passed.

    The answer is read with the state; a certificate read without one (or without its
    ``Retry-After``) is looked up in the store, all such in one query.
    """
    candidates: list[tuple[str, ActualCertificate]] = []
    unknown: list[str] = []
    capable = {name for name, issuer in issuers.items() if hasattr(issuer, "renewal_info")}
    for name, current in actual.certificates.items():
        if current.issuer not in capable or current.status not in _LIVE:
            continue
        if current.not_after <= now:
            continue  # RFC 9773 §4.3: never ask about an expired certificate
        window = current.renewal_window
        if window is not None and window.retry_after is not None:
            if window.retry_after > now:
                continue  # the CA asked us to wait; the stored window stands (read with the state: no query)
        else:
            unknown.append(current.id)
        candidates.append((name, current))
    stored = session.renewal_infos(unknown) if unknown else {}
    return [
        (name, current)
        for name, current in candidates
        if (record := stored.get(current.id)) is None or record.retry_after <= now
    ]


def _ari(issuer: Issuer) -> SupportsRenewalInfo:
    assert hasattr(issuer, "renewal_info")
    return issuer  # type: ignore[return-value]  # checked structurally above
