"""ARI windows are asked for when the CA's Retry-After has passed, read with the state: no query per certificate."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from certreconcile import engine as engine_module
from certreconcile.apply.ari import FAILURES_BEFORE_GIVING_UP, INLINE_BELOW, in_flight, refresh_renewal_info
from certreconcile.apply.executor import ApplyEnvironment
from certreconcile.clock import FixedClock
from certreconcile.errors import StateError
from certreconcile.plugins.ports import TargetObservation
from certreconcile.testing.fake_ca import RETRY_AFTER, FakeCa, Interval
from certreconcile.testing.fake_repository import InMemoryStore
from engine import T0, cert, desired_doc, environment, load, plan_now


class _CountingSession:
    def __init__(self, inner: Any, counts: dict[str, int]) -> None:
        self._inner, self._counts = inner, counts

    def __getattr__(self, name: str) -> Any:
        self._counts[name] = self._counts.get(name, 0) + 1
        return getattr(self._inner, name)


class CountingStore:
    """The store, counting which session methods are called (a stand-in for counting queries)."""

    def __init__(self, inner: InMemoryStore) -> None:
        self.inner = inner
        self.counts: dict[str, int] = {}

    @contextmanager
    def session(self) -> Iterator[Any]:
        with self.inner.session() as session:
            yield _CountingSession(session, self.counts)


def issued(tmp_path: Path, count: int) -> tuple[FixedClock, InMemoryStore, FakeCa, ApplyEnvironment]:
    """``count`` certificates issued by a fake CA that answers ARI, in memory."""
    clock = FixedClock(T0)
    store = InMemoryStore(clock=clock)
    desired = load(tmp_path, desired_doc([cert(f"c{number}") for number in range(count)]))
    ca = FakeCa("internal", clock)
    env = replace(environment(tmp_path, desired, store, clock), issuers={"internal": ca})
    assert engine_module.apply(plan_now(desired, store, clock), desired, env).ok
    return clock, store, ca, env


def test_fresh_windows_cost_no_query_and_no_question(tmp_path: Path) -> None:
    clock, store, ca, env = issued(tmp_path, 5)
    asked: list[str] = []
    original = ca.renewal_info

    def renewal_info(cert_pem: str, now: Any) -> Any:
        asked.append(cert_pem)
        return original(cert_pem, now)

    ca.renewal_info = renewal_info  # type: ignore[method-assign]

    def refresh() -> CountingStore:
        counting = CountingStore(store)
        with store.session() as session:
            actual = session.load_actual()
        refreshed = refresh_renewal_info(actual, env.issuers, counting, clock.now(), persist=True)  # type: ignore[arg-type]
        assert all(c.renewal_window is not None for c in refreshed.actual.certificates.values())
        return counting

    first = refresh()
    assert len(asked) == 5  # nothing stored yet: every certificate is asked about, once
    clock.advance(RETRY_AFTER - timedelta(minutes=1))
    second = refresh()
    assert len(asked) == 5  # the CA's Retry-After has not passed: nobody asked...
    assert second.counts == {}  # ...and no per-certificate query: the stored window came with the state
    # one query for the stored answers, one for the PEMs, one statement for the new answers, whatever the number
    assert first.counts == {"renewal_infos": 1, "leaf_pems": 1, "save_renewal_infos": 1}
    clock.advance(timedelta(minutes=2))
    refresh()
    assert len(asked) == 10  # Retry-After passed: asked again


def test_a_ca_that_keeps_failing_is_not_asked_about_every_certificate(tmp_path: Path) -> None:
    clock, store, ca, env = issued(tmp_path, 20)
    ca.outages = (Interval(T0, T0 + timedelta(days=1)),)  # the CA is down: every question fails
    with store.session() as session:
        actual = session.load_actual()
    refused_before = ca.refused
    refreshed = refresh_renewal_info(actual, env.issuers, store, clock.now(), persist=True)
    assert ca.refused - refused_before == FAILURES_BEFORE_GIVING_UP  # not 20 questions to a CA that is down
    assert refreshed.asked == FAILURES_BEFORE_GIVING_UP
    assert len(refreshed.warnings) == FAILURES_BEFORE_GIVING_UP + 1
    assert refreshed.warnings[-1].startswith("issuer internal: not asked about 17 more certificates (ARI) after 3")
    assert all(c.renewal_window is None for c in refreshed.actual.certificates.values())
    ca.outages = ()  # back: every certificate is asked about at the next refresh
    assert refresh_renewal_info(actual, env.issuers, store, clock.now(), persist=True).asked == 20



def test_failures_that_are_not_in_a_row_never_give_up(tmp_path: Path) -> None:
    clock, store, ca, env = issued(tmp_path, 12)
    original, calls = ca.renewal_info, [0]

    def flaky(cert_pem: str, now: Any) -> Any:  # every third question answered, the others fail
        calls[0] += 1
        if calls[0] % FAILURES_BEFORE_GIVING_UP:
            ca.outages = (Interval(T0, T0 + timedelta(days=1)),)
        try:
            return original(cert_pem, now)
        finally:
            ca.outages = ()

    ca.renewal_info = flaky  # type: ignore[method-assign]
    with store.session() as session:
        actual = session.load_actual()
    refreshed = refresh_renewal_info(actual, env.issuers, store, clock.now(), persist=True)
    assert refreshed.asked == 12  # two failures, an answer, two failures...: never three in a row
    assert len(refreshed.warnings) == 8 and not any("not asked about" in line for line in refreshed.warnings)
    assert sum(c.renewal_window is not None for c in refreshed.actual.certificates.values()) == 4


def test_an_issuer_taking_questions_in_flight_is_asked_that_many_at_once_with_the_same_answers(tmp_path: Path) -> None:
    clock, store, ca, env = issued(tmp_path, 13)
    with store.session() as session:
        actual = session.load_actual()
    in_turn = refresh_renewal_info(actual, env.issuers, store, clock.now(), persist=False)  # one at a time
    width = 4
    ca.renewal_info_in_flight = width  # type: ignore[attr-defined]  # as the ACME issuer declares its own
    assert in_flight(ca) == width
    together = threading.Barrier(width, timeout=10)  # passed only by `width` questions in flight at once
    threads: set[int] = set()
    original = ca.renewal_info

    def renewal_info(cert_pem: str, now: Any) -> Any:
        if threading.current_thread() is threading.main_thread():
            time.sleep(2 * INLINE_BELOW)  # the first answer is slow (a CA across a network): the rest in flight
        else:
            together.wait()  # asked in turn, a question would wait here alone: BrokenBarrierError
            threads.add(threading.get_ident())
        return original(cert_pem, now)

    ca.renewal_info = renewal_info  # type: ignore[method-assign]
    at_once = refresh_renewal_info(actual, env.issuers, store, clock.now(), persist=True)
    assert at_once.asked == in_turn.asked == 13 and not at_once.warnings
    assert len(threads) == width  # 12 questions in 3 waves of 4, after the first
    windows = {name: c.renewal_window for name, c in at_once.actual.certificates.items()}
    assert windows == {name: c.renewal_window for name, c in in_turn.actual.certificates.items()}
    assert None not in windows.values()
    with store.session() as session:  # and stored, as asked in turn would have stored them
        stored = session.renewal_infos([c.id for c in actual.certificates.values()])
    assert {cert_id: (r.window_start, r.window_end) for cert_id, r in stored.items()} == {
        c.id: (w.start, w.end) for c, w in ((actual.certificates[n], w) for n, w in windows.items() if w is not None)}


def test_an_issuer_answering_fast_is_asked_in_turn_even_when_it_takes_questions_in_flight(tmp_path: Path) -> None:
    clock, store, ca, env = issued(tmp_path, 10)
    ca.renewal_info_in_flight = 8  # type: ignore[attr-defined]
    original, threads = ca.renewal_info, set()

    def renewal_info(cert_pem: str, now: Any) -> Any:
        threads.add(threading.get_ident())
        return original(cert_pem, now)

    ca.renewal_info = renewal_info  # type: ignore[method-assign]
    with store.session() as session:
        actual = session.load_actual()
    # answers faster than inline_below (a second here, so that no pause of this machine counts as slow)
    assert refresh_renewal_info(actual, env.issuers, store, clock.now(), persist=True, inline_below=1.0).asked == 10
    assert threads == {threading.get_ident()}  # an in-memory answer: a thread could not overlap it


def test_a_ca_that_is_down_is_asked_at_most_one_wave_more_than_in_turn(tmp_path: Path) -> None:
    clock, store, ca, env = issued(tmp_path, 20)
    ca.renewal_info_in_flight = 4  # type: ignore[attr-defined]
    ca.outages = (Interval(T0, T0 + timedelta(days=1)),)
    with store.session() as session:
        actual = session.load_actual()
    refused_before = ca.refused
    refreshed = refresh_renewal_info(actual, env.issuers, store, clock.now(), persist=True)
    assert ca.refused - refused_before == refreshed.asked == FAILURES_BEFORE_GIVING_UP  # refused at once: in turn
    original = ca.renewal_info

    def slow_refusal(cert_pem: str, now: Any) -> Any:  # a CA that times out
        time.sleep(2 * INLINE_BELOW)
        return original(cert_pem, now)

    ca.renewal_info = slow_refusal  # type: ignore[method-assign]
    refreshed = refresh_renewal_info(actual, env.issuers, store, clock.now(), persist=True)
    assert refreshed.asked == 1 + 4  # the first, slow: then the wave holding the third failure in a row
    assert refreshed.warnings[-1].startswith("issuer internal: not asked about 15 more certificates (ARI) after 3")
    assert len(refreshed.warnings) == 5 + 1


def test_a_running_refresh_reads_each_certificate_once_and_forgets_replaced_ones(tmp_path: Path) -> None:
    clock, store, _ca, env = issued(tmp_path, 5)
    cache: dict[str, str] = {}

    def refresh() -> CountingStore:
        counting = CountingStore(store)
        with store.session() as session:
            actual = session.load_actual()
        refresh_renewal_info(actual, env.issuers, counting, clock.now(), persist=True, leaf_cache=cache)  # type: ignore[arg-type]
        return counting

    assert refresh().counts["leaf_pems"] == 1
    with store.session() as session:
        actual = session.load_actual()
    assert cache == session.leaf_pems([current.id for current in actual.certificates.values()])
    clock.advance(RETRY_AFTER + timedelta(minutes=1))
    again = refresh()
    assert "leaf_pems" not in again.counts  # every PEM came from the cache
    # every certificate was asked about again, and answered the same windows: one statement moves their Retry-After
    assert again.counts["save_unchanged_renewal_infos"] == 1 and "save_renewal_infos" not in again.counts
    stale = {f"gone-{number}": "PEM" for number in range(100)}  # replaced certificates, more than twice the live
    cache.update(stale)
    clock.advance(RETRY_AFTER + timedelta(minutes=1))
    refresh()
    assert not cache.keys() & stale.keys() and len(cache) == 5


def test_windows_answered_again_move_only_their_retry_after_and_moved_windows_are_stored(tmp_path: Path) -> None:
    clock, store, ca, env = issued(tmp_path, 6)

    def refresh() -> tuple[CountingStore, Any]:
        counting = CountingStore(store)
        with store.session() as session:
            actual = session.load_actual()
        refreshed = refresh_renewal_info(actual, env.issuers, counting, clock.now(), persist=True)  # type: ignore[arg-type]
        return counting, refreshed.actual

    refresh()
    with store.session() as session:
        ids = [current.id for current in session.load_actual().certificates.values()]
        before = session.renewal_infos(ids)
    clock.advance(RETRY_AFTER + timedelta(minutes=1))
    moved_at = clock.now()
    ca.move_windows(["c1", "c4"], moved_at, timedelta(hours=2))  # a mass revocation moves two windows
    counting, actual = refresh()
    assert counting.counts["save_renewal_infos"] == 1 and counting.counts["save_unchanged_renewal_infos"] == 1
    assert actual.certificates["c1"].renewal_window.start == moved_at  # the plan sees the moved windows
    assert actual.certificates["c0"].renewal_window.start == before[actual.certificates["c0"].id].window_start
    with store.session() as session:
        after = session.renewal_infos(ids)
    moved = {actual.certificates[name].id for name in ("c1", "c4")}
    for cert_id in ids:
        assert after[cert_id].retry_after == moved_at + RETRY_AFTER  # every answer's Retry-After is stored
        assert after[cert_id].fetched_at == moved_at
        if cert_id in moved:
            assert (after[cert_id].window_start, after[cert_id].window_end) == (moved_at, moved_at + timedelta(hours=2))
        else:
            assert (after[cert_id].window_start, after[cert_id].window_end) == (
                before[cert_id].window_start, before[cert_id].window_end)  # fmt: skip
    clock.advance(timedelta(minutes=1))
    assert refresh()[0].counts == {}  # and the Retry-After stored for the unchanged ones holds: nobody asked


def _answered_again(tmp_path: Path) -> tuple[FixedClock, InMemoryStore, ApplyEnvironment, list[str]]:
    """Three certificates whose windows were asked about once, and whose Retry-After has passed since."""
    clock, store, _ca, env = issued(tmp_path, 3)
    with store.session() as session:
        refresh_renewal_info(session.load_actual(), env.issuers, store, clock.now(), persist=True)
        ids = [current.id for current in session.load_actual().certificates.values()]
    clock.advance(RETRY_AFTER + timedelta(minutes=1))
    return clock, store, env, ids


def test_a_deferred_refresh_leaves_the_retry_afters_answered_again_to_its_caller(tmp_path: Path) -> None:
    clock, store, env, ids = _answered_again(tmp_path)
    with store.session() as session:
        actual, before = session.load_actual(), session.renewal_infos(ids)
    refreshed = refresh_renewal_info(actual, env.issuers, store, clock.now(), persist=True, defer_unchanged=True)
    assert refreshed.asked == 3 and refreshed.pending is not None
    with store.session() as session:
        assert session.renewal_infos(ids) == before  # nothing stored yet
    refreshed.pending()
    with store.session() as session:
        assert {record.retry_after for record in session.renewal_infos(ids).values()} == {clock.now() + RETRY_AFTER}
    # a refresh that stores nothing leaves nothing to its caller
    assert refresh_renewal_info(actual, env.issuers, store, clock.now(), persist=False).pending is None


class _GatedSaves:
    """The store, with ``save_unchanged_renewal_infos`` waiting until ``gate`` is set (by a probe)."""

    def __init__(self, inner: InMemoryStore, gate: threading.Event, fail: bool = False) -> None:
        self.inner, self.gate, self.fail, self.opened = inner, gate, fail, threading.Event()

    @contextmanager
    def session(self) -> Iterator[Any]:
        with self.inner.session() as session:
            yield _GatedSession(session, self)


class _GatedSession:
    def __init__(self, inner: Any, owner: _GatedSaves) -> None:
        self._inner, self._owner = inner, owner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def save_unchanged_renewal_infos(self, *args: Any) -> None:
        self._owner.opened.set()
        assert self._owner.gate.wait(timeout=10), "the probes never ran while the Retry-Afters were stored"
        if self._owner.fail:
            raise StateError("the database went away while storing the Retry-Afters")
        self._inner.save_unchanged_renewal_infos(*args)


class _GateOpeningTarget:
    """A target that serves nothing; probing it opens the gate (once the deferred save has begun)."""

    def __init__(self, saves: _GatedSaves) -> None:
        self.saves = saves

    def observe(self, name: str, domains: tuple[str, ...]) -> TargetObservation:
        assert self.saves.opened.wait(timeout=10), "the deferred save never started"
        self.saves.gate.set()
        return TargetObservation(fingerprint=None, error="serves nothing")


def test_gather_stores_the_retry_afters_answered_again_while_it_probes_the_targets(tmp_path: Path) -> None:
    clock, store, env, ids = _answered_again(tmp_path)
    saves = _GatedSaves(store, threading.Event())
    desired = load(tmp_path, desired_doc([cert(f"c{n}") for n in range(3)]))
    gathered = engine_module.gather(desired, saves, clock.now(), issuers=env.issuers, persist_renewal_info=True,  # type: ignore[arg-type]
                                    targets={"deploy": _GateOpeningTarget(saves)})  # fmt: skip
    assert gathered.renewal_info_asked == 3
    assert len(gathered.observations.for_name("c0")) == 1  # probed, while the save waited for the probe
    with store.session() as session:  # and stored by the time gather returned
        assert {record.retry_after for record in session.renewal_infos(ids).values()} == {clock.now() + RETRY_AFTER}


def test_gather_raises_the_deferred_saves_error_after_probing(tmp_path: Path) -> None:
    clock, store, env, ids = _answered_again(tmp_path)
    saves = _GatedSaves(store, threading.Event(), fail=True)
    desired = load(tmp_path, desired_doc([cert(f"c{n}") for n in range(3)]))
    with pytest.raises(StateError, match="storing the Retry-Afters"):
        engine_module.gather(desired, saves, clock.now(), issuers=env.issuers, persist_renewal_info=True,  # type: ignore[arg-type]
                             targets={"deploy": _GateOpeningTarget(saves)})  # fmt: skip
    assert saves.gate.is_set()  # the probes ran first
    with store.session() as session:
        assert all(record.retry_after < clock.now() for record in session.renewal_infos(ids).values())
