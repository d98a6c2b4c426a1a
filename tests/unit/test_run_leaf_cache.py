"""``run`` keeps the leaf PEMs it asked the CA about (ARI) between cycles; its renewals name the certificate
they replace from them instead of reading it from the state (a statement per renewal)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from test_run_pacing import world

from certreconcile.testing.fake_state.certificates import FakeCertificates
from helpers import record_calls


def test_renewals_in_run_take_the_replaced_certificate_from_the_leaf_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reconciler, store, ca = world(tmp_path, 3)
    assert reconciler.cycle().errors == ()
    with store.session() as session:
        names = sorted(session.load_actual().certificates)
    reads = record_calls(monkeypatch, FakeCertificates, "certificate_pems")
    reconciler.clock.advance(timedelta(days=80))  # type: ignore[attr-defined]  # inside every CA window
    renewed = reconciler.cycle()
    assert renewed.errors == ()
    # Each renewal told the CA the certificate it replaces (the fake CA finds it by its PEM: "ari")...
    assert sorted((order.name, order.kind) for order in ca.orders[len(names) :]) == [(name, "ari") for name in names]
    assert reads == []  # ...which this cycle's ARI refresh had read: no read of the state for it
