"""The nonce cache: a nonce is accepted once while its request can still be fresh, then forgotten."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from certreconcile.agent.nonces import NonceCache

T0 = datetime(2026, 12, 6, 7, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=5)


def test_a_nonce_is_accepted_once() -> None:
    cache = NonceCache(WINDOW)
    assert cache.accept("a" * 22, T0, T0)
    assert not cache.accept("a" * 22, T0, T0 + timedelta(seconds=1))
    assert cache.accept("b" * 22, T0, T0)


def test_a_nonce_is_remembered_as_long_as_its_request_is_fresh() -> None:
    cache = NonceCache(WINDOW)
    future = T0 + timedelta(minutes=4)  # a request stamped ahead of the agent's clock
    assert cache.accept("n" * 22, future, T0)
    # Still inside the window around its timestamp: a replay is refused.
    assert not cache.accept("n" * 22, future, T0 + timedelta(minutes=8, seconds=59))
    # Past timestamp + window nobody can replay it fresh, and it is forgotten.
    cache.accept("other" * 5, T0, T0 + timedelta(minutes=9, seconds=1))
    assert len(cache) == 1


def test_entries_are_evicted_after_the_window() -> None:
    cache = NonceCache(WINDOW)
    for index in range(100):
        assert cache.accept(f"nonce-{index:04d}-padding-xx", T0, T0)
    assert len(cache) == 100
    assert cache.accept("late-nonce-padding-xxxxxx", T0 + timedelta(minutes=6), T0 + timedelta(minutes=6))
    assert len(cache) == 1


def test_a_new_window_applies_to_nonces_seen_afterwards() -> None:
    cache = NonceCache(WINDOW)
    cache.accept("first-nonce-padding-xxxx", T0, T0)
    cache.set_window(timedelta(minutes=1))
    cache.accept("second-nonce-padding-xxx", T0, T0)
    cache.accept("probe-nonce-padding-xxxx", T0, T0 + timedelta(minutes=2))
    assert not cache.accept("first-nonce-padding-xxxx", T0, T0 + timedelta(minutes=2))  # kept its 5 minutes
    assert cache.accept("second-nonce-padding-xxx", T0, T0 + timedelta(minutes=2))  # forgotten after 1
