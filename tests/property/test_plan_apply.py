"""Property: for random desired states and clocks, after apply a new plan at the same time is empty,
and the same inputs always give byte-identical plans."""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certreconcile.clock import FixedClock
from certreconcile.testing.fake_repository import InMemoryStore
from engine import T0, desired_doc, load, plan_and_apply, plan_now

NAMES = ["alpha", "beta", "gamma", "delta"]
LABELS = ["www", "api", "shop", "mail", "a-b"]
TARGETS = {"one": {"files": {"dir": "t1"}}, "two": {"files": {"dir": "t2"}}}


@st.composite
def certificate(draw: st.DrawFn, name: str, lifetime_days: int) -> dict[str, Any]:
    labels = draw(st.lists(st.sampled_from(LABELS), min_size=1, max_size=3, unique=True))
    body: dict[str, Any] = {
        "name": name,
        "domains": [f"{label}.{name}.example.com" for label in labels],
        "issuer": "internal",
        "key": draw(st.sampled_from(["ecdsa-p256", "ecdsa-p384", "ecdsa-p256", "rsa-2048"])),
        "targets": draw(st.lists(st.sampled_from(sorted(TARGETS)), max_size=2, unique=True)),
        "on_delete": draw(st.sampled_from(["retire", "revoke"])),
    }
    durations = [f"{days}d" for days in (2, 10, 29) if days < lifetime_days]
    renew = draw(st.sampled_from([None, "50%", "90%", "1h", *durations]))
    if renew is not None:
        body["renew_before"] = renew
    return body


@st.composite
def desired_docs(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(NAMES), max_size=3, unique=True))
    lifetime_days = draw(st.sampled_from([30, 90, 7]))
    return desired_doc(
        [draw(certificate(name, lifetime_days)) for name in sorted(names)],
        targets=TARGETS,
        lifetime=f"{lifetime_days}d",
    )


steps = st.lists(st.tuples(desired_docs(), st.integers(min_value=0, max_value=120)), min_size=1, max_size=3)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=steps)
def test_after_apply_the_next_plan_is_empty(steps: list[tuple[dict[str, Any], int]]) -> None:
    with tempfile.TemporaryDirectory() as temp:
        directory = Path(temp)
        clock = FixedClock(T0)
        store = InMemoryStore(clock=clock)
        for doc, advance_days in steps:
            clock.advance(timedelta(days=advance_days, hours=advance_days % 7))
            desired = load(directory, doc)
            first = plan_now(desired, store, clock)
            assert first.dumps() == plan_now(desired, store, clock).dumps()
            _, result = plan_and_apply(directory, desired, store, clock)
            assert result.ok, [r.message for r in result.failures]
            after = plan_now(desired, store, clock)
            assert after.is_empty, [(c.action, c.name, [r.message for r in c.reasons]) for c in after.changes]
            with store.session() as session:
                assert sorted(session.load_actual().certificates) == sorted(desired.certificates)
