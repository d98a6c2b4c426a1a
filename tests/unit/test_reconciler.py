"""The loop of `certreconcile run` without processes or databases: timing, signals, metrics, ACME labels."""

from __future__ import annotations

import gc
import platform
import random
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import certreconcile
from certreconcile.apply.metrics import METRIC_NAMES, ReconcilerMetrics
from certreconcile.cli.commands.run import parse_interval, parse_jitter
from certreconcile.clock import TEST_NOW_VARIABLE, FixedClock, SystemClock, clock_from_env
from certreconcile.errors import CertReconcileError
from certreconcile.plugins.issuers.acme.client import endpoint_name
from certreconcile.reconciler import (
    CYCLE_YOUNG_THRESHOLD,
    CycleResult,
    LoopControl,
    Reconciler,
    _young_collections_every,
    jittered_interval,
    run_forever,
    sleeper_for,
    wait_on_event,
)


def result() -> CycleResult:
    return CycleResult(started_at=0.0, finished_at=0.0, git_commit=None)


def test_once_runs_one_cycle() -> None:
    calls: list[int] = []

    def cycle() -> CycleResult:
        calls.append(1)
        return result()

    assert run_forever(cycle, interval=60, jitter=0, control=LoopControl(), once=True) == 1
    assert calls == [1]


def test_stop_requested_during_a_cycle_ends_the_loop_after_it() -> None:
    control = LoopControl()
    finished: list[bool] = []

    def cycle() -> CycleResult:
        control.request_stop()  # as SIGTERM would, in the middle of the cycle
        time.sleep(0.05)
        finished.append(True)
        return result()

    started = time.monotonic()
    assert run_forever(cycle, interval=3600, jitter=0, control=control) == 1
    assert finished == [True]
    assert time.monotonic() - started < 5  # it did not sleep the interval


def test_reload_cuts_the_sleep_short_and_stop_wakes_it() -> None:
    control = LoopControl()
    cycles: list[float] = []

    def cycle() -> CycleResult:
        cycles.append(time.monotonic())
        return result()

    thread = threading.Thread(target=run_forever, args=(cycle,), kwargs={"interval": 3600, "jitter": 0.1,
                                                                           "control": control})  # fmt: skip
    thread.start()
    deadline = time.monotonic() + 5
    while len(cycles) < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    control.request_reload()  # SIGHUP: run now
    while len(cycles) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(cycles) == 2
    control.request_stop()
    thread.join(5)
    assert not thread.is_alive()
    assert len(cycles) == 2


def test_jitter_stays_within_its_share() -> None:
    rng = random.Random(7)
    values = [jittered_interval(100.0, 0.1, rng) for _ in range(1000)]
    assert min(values) >= 90.0 and max(values) <= 110.0
    assert max(values) - min(values) > 10  # it does spread
    assert jittered_interval(100.0, 0.0, rng) == 100.0


@pytest.mark.parametrize(("text", "seconds"), [("1h", 3600.0), ("15m", 900.0), ("30s", 30.0), ("0.25", 0.25)])
def test_interval_forms(text: str, seconds: float) -> None:
    assert parse_interval(text) == seconds


@pytest.mark.parametrize("text", ["0", "-1", "soon", "1y"])
def test_bad_intervals_are_usage_errors(text: str) -> None:
    with pytest.raises(CertReconcileError) as caught:
        parse_interval(text)
    assert caught.value.code == "usage"


def test_jitter_forms() -> None:
    assert parse_jitter("10%") == pytest.approx(0.1)
    assert parse_jitter("0.2") == pytest.approx(0.2)
    assert parse_jitter("0") == 0.0
    for bad in ("100%", "-5%", "lots"):
        with pytest.raises(CertReconcileError):
            parse_jitter(bad)


def test_metrics_use_their_own_registry_and_the_documented_names() -> None:
    first, second = ReconcilerMetrics(), ReconcilerMetrics()  # would clash on the global registry
    first.observe_acme_request("newOrder", 201, 0.2)
    first.observe_cycle("success", 1234.0, 2)
    text = generate_latest(first.registry).decode()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    exported = set()
    for family in families.values():
        if family.name.endswith("_created"):  # prometheus-client's creation-time series of each counter
            continue
        exported.add(family.name + ("_total" if family.type == "counter" else ""))
    assert exported == METRIC_NAMES
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("certreconcile_acme_requests_total", (("endpoint", "newOrder"), ("status", "201")))] == 1.0
    assert samples[("certreconcile_declaration_changes_pending", ())] == 2.0
    timed = (("endpoint", "newOrder"), ("le", "0.25"), ("status", "201"))
    assert samples[("certreconcile_acme_request_duration_seconds_bucket", timed)] == 1.0
    assert samples[("certreconcile_acme_request_duration_seconds_bucket", (*timed[:1], ("le", "0.1"), timed[2]))] == 0
    # every cycle outcome is exported from the start (at 0): the first error is an increase Prometheus sees
    outcomes = {
        dict(labels)["outcome"]: v for (n, labels), v in samples.items() if n == "certreconcile_reconcile_cycles_total"
    }
    assert outcomes == {"success": 1.0, "noop": 0.0, "partial": 0.0, "error": 0.0}
    assert samples[("process_start_time_seconds", ())] > 0  # the process and platform collectors
    assert ("python_info" in families) and ("process_cpu_seconds" in families)
    build = list(families["certreconcile_build_info"].samples)
    assert [(s.labels["version"], s.value) for s in build] == [(certreconcile.__version__, 1.0)]
    assert build[0].labels["python_version"] == platform.python_version()
    assert 'endpoint="newOrder"' not in generate_latest(second.registry).decode()


LE = "https://acme-v02.api.letsencrypt.org"
DIRECTORY = {
    "newNonce": f"{LE}/acme/new-nonce",
    "newAccount": f"{LE}/acme/new-acct",
    "newOrder": f"{LE}/acme/new-order",
    "revokeCert": f"{LE}/acme/revoke-cert",
    "keyChange": f"{LE}/acme/key-change",
    "renewalInfo": f"{LE}/draft-ietf-acme-ari-03/renewalInfo",
}


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        (f"{LE}/acme/new-order", "newOrder"),
        (f"{LE}/acme/new-acct", "newAccount"),
        (f"{LE}/acme/new-nonce", "newNonce"),
        (f"{LE}/acme/revoke-cert", "revokeCert"),
        (f"{LE}/draft-ietf-acme-ari-03/renewalInfo/aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE", "renewalInfo"),
        (f"{LE}/acme/order/12345/67890", "order"),
        (f"{LE}/acme/finalize/12345/67890", "finalize"),
        (f"{LE}/acme/authz-v3/1234", "authz"),
        (f"{LE}/acme/chall-v3/1234/abcd", "challenge"),
        (f"{LE}/acme/cert/fa0b1c", "cert"),
        (f"{LE}/acme/acct/12345", "account"),
        ("https://127.0.0.1:14000/my-order/x", "order"),
        ("https://127.0.0.1:14000/finalize-order/x", "finalize"),
        ("https://127.0.0.1:14000/authZ/x", "authz"),
        ("https://127.0.0.1:14000/chalZ/x", "challenge"),
        ("https://127.0.0.1:14000/certZ/x", "cert"),
        ("https://127.0.0.1:8200/v1/pki/acme/order/abc/finalize", "finalize"),
        ("https://127.0.0.1:8200/v1/pki/acme/order/abc/cert", "cert"),
        ("https://127.0.0.1:8200/v1/pki/acme/authorization/abc", "authz"),
        ("https://127.0.0.1:8200/v1/pki/acme/challenge/abc/http-01", "challenge"),
        ("https://127.0.0.1:14000/dir", "directory"),
        ("https://example.test/something", "other"),
    ],
)
def test_acme_endpoints_are_resource_names_never_urls(url: str, endpoint: str) -> None:
    from acme import messages

    assert endpoint_name(url, messages.Directory(DIRECTORY)) == endpoint


def test_a_test_clock_sleeps_by_moving_on_not_by_waiting() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    clock = FixedClock(start)
    control = LoopControl()
    seen: list[datetime] = []

    def cycle() -> CycleResult:
        seen.append(clock.now())
        if len(seen) == 3:
            control.request_stop()
        return result()

    began = time.monotonic()
    assert run_forever(cycle, interval=3600, jitter=0, control=control, sleep=sleeper_for(clock)) == 3
    assert seen == [start, start + timedelta(hours=1), start + timedelta(hours=2)]
    assert time.monotonic() - began < 30  # two hours of sleep took no hour


def test_the_system_clock_sleeps_for_real_unless_woken() -> None:
    assert sleeper_for(SystemClock()) is wait_on_event
    wake = threading.Event()
    wake.set()
    wait_on_event(wake, 3600)  # returns at once: woken


def test_the_test_clock_comes_only_from_its_variable() -> None:
    assert isinstance(clock_from_env({}), SystemClock)
    fixed = clock_from_env({TEST_NOW_VARIABLE: "2026-03-01T10:00:00Z"})
    assert fixed.now() == datetime(2026, 3, 1, 10, tzinfo=UTC)
    for bad in ("yesterday", "2026-03-01T10:00:00"):  # unreadable; no offset
        with pytest.raises(ValueError, match=TEST_NOW_VARIABLE):
            clock_from_env({TEST_NOW_VARIABLE: bad})


class _RecordingSource:
    """A desired source that notes the collector's thresholds when a cycle reads it, then fails the cycle."""

    def __init__(self) -> None:
        self.thresholds: list[tuple[int, int, int]] = []

    def load(self) -> Any:
        self.thresholds.append(gc.get_threshold())
        raise CertReconcileError("no declarations here", code="usage")


def test_a_cycle_runs_with_young_collections_spaced_out_and_puts_them_back() -> None:
    before = gc.get_threshold()
    gc.set_threshold(700, before[1], before[2])
    try:
        source = _RecordingSource()
        clock = FixedClock(datetime(2026, 1, 1, tzinfo=UTC))
        replica = Reconciler(source, store=None, build_environment=None, clock=clock)  # type: ignore[arg-type]
        outcome = replica.cycle()
        assert outcome.errors == ("error[usage]: no declarations here",)
        assert source.thresholds == [(CYCLE_YOUNG_THRESHOLD, before[1], before[2])]
        assert gc.get_threshold() == (700, before[1], before[2])
    finally:
        gc.set_threshold(*before)


def test_concurrent_cycles_restore_the_thresholds_when_the_last_one_leaves() -> None:
    before = gc.get_threshold()
    gc.set_threshold(700, before[1], before[2])
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, int] = {}

    def first() -> None:
        with _young_collections_every(50_000):
            first_in.set()
            second_in.wait(5)
        first_out.set()

    def second() -> None:
        first_in.wait(5)
        with _young_collections_every(50_000):
            second_in.set()
            first_out.wait(5)
            seen["after the first left"] = gc.get_threshold()[0]
        seen["after both left"] = gc.get_threshold()[0]

    try:
        threads = [threading.Thread(target=first), threading.Thread(target=second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert seen == {"after the first left": 50_000, "after both left": 700}
        gc.set_threshold(90_000, before[1], before[2])
        with _young_collections_every(50_000):  # a larger threshold already set is kept
            assert gc.get_threshold()[0] == 90_000
        assert gc.get_threshold()[0] == 90_000
    finally:
        gc.set_threshold(*before)
